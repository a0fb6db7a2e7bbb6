// The library list (with Delete) and the health line in the top bar.
import { $, el, showError } from "./dom.js";
import { api } from "./api.js";

async function health() {
  try {
    const h = await api("/health");
    const model = (h.models.generator || "no generator").split("/").pop();
    $("health").textContent = h.store.documents + (h.store.documents === 1 ? " document · " : " documents · ") + model;
  } catch (e) { showError($("health"), e); }
}

export async function refreshLibrary() {
  let docs;
  try { docs = (await api("/api/documents")).documents; } catch (e) { showError($("doc-count"), e); return; }
  const list = $("library");
  list.replaceChildren();
  $("library-empty").hidden = docs.length > 0;
  $("doc-count").textContent = docs.length ? docs.length + (docs.length === 1 ? " document" : " documents") : "";
  for (const d of docs.slice().reverse()) {
    const del = el("button", { class: "button danger", type: "button", text: "Delete",
      "aria-label": "Delete " + d.filename });
    del.addEventListener("click", async () => {
      if (!confirm("Delete " + d.filename + "?")) return;
      del.disabled = true;
      try { await api("/api/documents/" + encodeURIComponent(d.id), { method: "DELETE" }); } catch (e) {
        alert(e.message + (e.requestId ? " (request id " + e.requestId + ")" : ""));
      }
      refreshLibrary();
    });
    list.append(el("li", { "data-doc": d.id },
      el("span", { class: "doc-title", text: d.title || d.filename, title: d.title || d.filename }),
      del,
      el("div", { class: "doc-meta" },
        el("span", { text: d.filename }),
        el("span", { text: d.pages + (d.pages === 1 ? " page" : " pages") }),
        el("span", { text: d.chunks + " chunks" }),
        el("span", { class: "status ready", text: "ready" }))));
  }
  health();
}
