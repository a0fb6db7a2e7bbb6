// An answer's sources: the numbered list under it, and the side panel that shows one
// passage with the cited span highlighted. Each turn passes its own sources: a chip of an
// earlier turn opens that turn's passage.
import { $, el } from "./dom.js";
import { getKey, authHeaders } from "./api.js";

// The list of `sources` into `list` (`box`, around it, shown when there are any);
// `open(marker, citation, opener)` shows one in the panel.
export function renderSources(list, box, sources, open) {
  list.replaceChildren();
  box.hidden = !sources.length;
  for (const s of sources) {
    const button = el("button", { class: "button ghost", type: "button", text: s.title || s.path });
    button.addEventListener("click", () => open(s.marker, null, button));
    const meta = [el("span", { class: "muted", text: " · page " + s.page_start })];
    if (s.ocr) meta.push(ocrLabel());
    list.append(el("li", {}, el("span", { class: "source-num", text: "[" + s.marker + "]" }),
      el("div", { class: "source-body" }, button, ...meta,
        el("div", { class: "source-snippet", text: s.text }))));
  }
}

// A passage whose text was read by OCR from a scanned page: worth checking against the page.
function ocrLabel() {
  return el("span", { class: "ocr-label", text: "OCR", title: "Text read by OCR from a scanned page" });
}

// -- source panel --------------------------------------------------------------
let returnFocus = null;
// Source [marker] of `sources` (an answer's, by marker - 1), with the citation's span marked.
export function openPanel(sources, marker, citation, opener) {
  const source = sources && sources[marker - 1];
  if (!source) return;
  returnFocus = opener || null;
  const page = citation ? citation.page : source.page_start;
  $("panel-title").textContent = source.title || source.path;
  $("panel-page").textContent = "Page " + page + " · source [" + marker + "]";
  if (source.ocr) $("panel-page").append(" ", ocrLabel());
  const note = $("panel-note");
  note.hidden = !(citation && (!citation.supported || citation.inferred));
  note.textContent = citation && !citation.supported ? "This sentence is not supported by the passage: check it before relying on it."
    : "The model did not cite this passage; the checker matched it to the sentence.";
  const box = $("panel-text");
  box.replaceChildren();
  const text = source.text;
  const [start, end] = citation && citation.span ? citation.span : [0, 0];
  if (end > start) {
    box.append(document.createTextNode(text.slice(0, start)),
      el("mark", { text: text.slice(start, end) }), document.createTextNode(text.slice(end)));
  } else {
    box.append(document.createTextNode(text));
  }
  const link = $("panel-open");
  link.href = "/api/documents/" + encodeURIComponent(source.doc) + "/file#page=" + page;
  link.textContent = "Open page " + page;
  $("panel").hidden = false;
  $("panel").focus();
  const mark = box.querySelector("mark");
  if (mark) mark.scrollIntoView({ block: "nearest" });
}

export function closePanel() {
  if ($("panel").hidden) return;
  $("panel").hidden = true;
  document.querySelectorAll(".chip.active").forEach((x) => x.classList.remove("active"));
  if (returnFocus) returnFocus.focus();
}

export function initPanel() {
  $("panel-close").addEventListener("click", closePanel);
  $("panel-open").addEventListener("click", async (e) => {
    if (!getKey()) return; // a plain link works; with a key the file needs the header
    e.preventDefault();
    const link = e.currentTarget;
    const [path, hash] = link.getAttribute("href").split("#");
    const tab = window.open("", "_blank");
    try {
      const r = await fetch(path, { headers: authHeaders() });
      if (!r.ok) throw new Error(r.status + "");
      const url = URL.createObjectURL(await r.blob());
      if (tab) tab.location = url + (hash ? "#" + hash : ""); else location.assign(url);
    } catch (err) { if (tab) tab.close(); alert("Cannot open the file: " + err.message); }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closePanel(); });
}
