// The page: uploads with progress, the library, streamed answers with citation chips.
// All document and answer text is inserted with textContent / text nodes, never innerHTML.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  // -- API key: ?key= once, then sessionStorage; sent as a Bearer header ----------
  const params = new URLSearchParams(location.search);
  if (params.has("key")) {
    sessionStorage.setItem("apiKey", params.get("key"));
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  const apiKey = sessionStorage.getItem("apiKey") || "";
  const authHeaders = (extra = {}) => (apiKey ? { ...extra, Authorization: "Bearer " + apiKey } : extra);

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.status === 204 ? null : response.json();
  }

  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  };

  // -- health --------------------------------------------------------------------
  async function health() {
    try {
      const h = await api("/health");
      const model = (h.models.generator || "no generator").split("/").pop();
      $("health").textContent = h.store.documents + (h.store.documents === 1 ? " document · " : " documents · ") + model;
    } catch (e) { $("health").textContent = e.message; }
  }

  // -- uploads -------------------------------------------------------------------
  const dropzone = $("dropzone"), input = $("file-input");
  ["dragenter", "dragover"].forEach((t) => dropzone.addEventListener(t, (e) => {
    e.preventDefault(); dropzone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => dropzone.addEventListener(t, (e) => {
    e.preventDefault(); dropzone.classList.remove("over");
  }));
  dropzone.addEventListener("drop", (e) => uploadFiles(e.dataTransfer.files));
  dropzone.addEventListener("keydown", (e) => {
    if (e.target === dropzone && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { uploadFiles(input.files); input.value = ""; });

  function uploadFiles(files) {
    for (const file of Array.from(files)) uploadOne(file);
  }

  function uploadRow(name) {
    const status = el("span", { class: "status", text: "uploading" });
    const bar = el("span");
    const reason = el("div", { class: "reason", hidden: "" });
    const row = el("li", {}, el("div", { class: "upload-row" }, el("span", { class: "upload-name", text: name, title: name }), status),
      el("div", { class: "progress" }, bar), reason);
    $("uploads").prepend(row);
    return {
      set(label, fraction, kind) {
        status.textContent = label;
        status.className = "status " + (kind || "");
        if (fraction != null) bar.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + "%";
      },
      fail(text) { reason.hidden = false; reason.textContent = text; },
    };
  }

  function uploadOne(file) {
    const row = uploadRow(file.name);
    const form = new FormData();
    form.append("files", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/documents");
    if (apiKey) xhr.setRequestHeader("Authorization", "Bearer " + apiKey);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) row.set("uploading", e.loaded / e.total * 0.5); };
    xhr.onerror = () => { row.set("failed", 1, "failed"); row.fail("network error"); };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status !== 202) { row.set("failed", 1, "failed"); row.fail(body.error || "upload refused (" + xhr.status + ")"); return; }
      pollJob(body.jobs[0], row);
    };
    xhr.send(form);
  }

  function pollJob(job, row) {
    const show = (j) => {
      const p = j.progress || {};
      const fraction = p.total ? 0.5 + 0.5 * p.done / p.total : 0.55;
      if (j.status === "done") { row.set("ready", 1, "done"); return true; }
      if (j.status === "failed") { row.set("failed", 1, "failed"); row.fail(j.reason || "failed"); return true; }
      row.set(j.status === "queued" ? "queued" : (p.stage || "ingesting"), fraction);
      return false;
    };
    if (show(job)) { refreshLibrary(); return; }
    const timer = setInterval(async () => {
      try {
        if (show(await api("/api/jobs/" + encodeURIComponent(job.id)))) { clearInterval(timer); refreshLibrary(); }
      } catch (e) { clearInterval(timer); row.set("failed", 1, "failed"); row.fail(e.message); }
    }, 700);
  }

  // -- library -------------------------------------------------------------------
  async function refreshLibrary() {
    let docs;
    try { docs = (await api("/api/documents")).documents; } catch (e) { $("doc-count").textContent = e.message; return; }
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
        try { await api("/api/documents/" + encodeURIComponent(d.id), { method: "DELETE" }); } catch (e) { alert(e.message); }
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

  // -- questions -----------------------------------------------------------------
  const question = $("question"), answerEl = $("answer");
  let current = null; // {answer, sources, citations}
  question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("ask-form").requestSubmit(); }
  });
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask(question.value.trim()); });

  async function ask(text) {
    if (!text) return;
    const button = $("ask-button");
    button.disabled = true;
    closePanel();
    $("answer-card").hidden = false;
    answerEl.className = "answer streaming";
    answerEl.setAttribute("aria-busy", "true");
    answerEl.textContent = "";
    $("answer-meta").textContent = "Searching your documents…";
    $("sources").replaceChildren();
    $("sources-title").hidden = true;
    current = { sources: [], citations: [], answer: null };
    try {
      const response = await fetch("/api/ask", { method: "POST",
        headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ question: text, stream: true }) });
      if (!response.ok) {
        let message = response.status + "";
        try { message = (await response.json()).error || message; } catch (_) { /* ignore */ }
        const retry = response.headers.get("Retry-After");
        if (response.status === 503 && retry) message += " (retry in " + retry + " s)";
        throw new Error(message);
      }
      await readEvents(response.body.getReader(), onEvent);
    } catch (e) {
      answerEl.className = "answer error";
      answerEl.textContent = "Error: " + e.message;
      $("answer-meta").textContent = "";
    } finally {
      answerEl.classList.remove("streaming");
      answerEl.setAttribute("aria-busy", "false");
      button.disabled = false;
    }
  }

  async function readEvents(reader, handle) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message"; const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) handle(name, JSON.parse(data.join("\n")));
      }
    }
  }

  function onEvent(name, data) {
    if (name === "sources") {
      current.sources = data.sources;
      $("answer-meta").textContent = data.sources.length ? "Writing the answer…" : "";
    } else if (name === "token") {
      answerEl.append(document.createTextNode(data.text));
    } else if (name === "citation") {
      current.citations.push(data);
    } else if (name === "done") {
      current.answer = data;
      current.sources = data.sources;
      current.citations = data.citations;
      renderAnswer(data);
    } else if (name === "error") {
      throw new Error(data.error);
    }
  }

  function renderAnswer(a) {
    answerEl.replaceChildren();
    answerEl.className = "answer" + (a.refused ? " not-found" : "");
    const text = a.answer;
    // Insertion points: the model's [n] markers, and inferred citations at their sentence's end.
    const points = [];
    const re = /\[(\d+)\]/g;
    let m;
    while ((m = re.exec(text)) !== null) {
      const n = Number(m[1]);
      points.push({ at: m.index, len: m[0].length, n, c: findCitation(a.citations, n, m.index) });
    }
    const seen = new Set();
    for (const c of a.citations.filter((x) => x.inferred)) {
      const key = c.marker + ":" + c.sentence_end;
      if (seen.has(key)) continue;
      seen.add(key);
      points.push({ at: Math.min(c.sentence_end, text.length), len: 0, n: c.marker, c, inferred: true });
    }
    points.sort((x, y) => x.at - y.at || y.len - x.len);
    let last = 0;
    for (const p of points) {
      if (p.at < last) continue;
      if (p.at > last) answerEl.append(document.createTextNode(text.slice(last, p.at)));
      const b = chip(p.n, p.c);
      if (p.inferred) {
        b.classList.add("inferred");
        b.title = "added by the checker: the model did not cite this" +
          (p.c.supported ? "" : " (not supported by the passage)");
        answerEl.append(document.createTextNode(" "));
      }
      answerEl.append(b);
      last = p.at + p.len;
    }
    if (last < text.length) answerEl.append(document.createTextNode(text.slice(last)));
    const t = a.timings || {};
    $("answer-meta").textContent = a.refused ? "Not found in your documents." :
      (a.citations.length + " citation" + (a.citations.length === 1 ? "" : "s") +
       (t.total_s != null ? " · " + t.total_s.toFixed(1) + " s" : "") +
       (a.generation_tps ? " · " + a.generation_tps.toFixed(0) + " tok/s" : "") +
       (a.notice ? " · " + a.notice : ""));
    renderSources(a.sources);
  }

  function findCitation(citations, marker, offset) {
    // The citation for this marker whose sentence holds (or ends just before) the marker.
    const same = citations.filter((c) => c.marker === marker && !c.inferred);
    return same.find((c) => offset >= c.sentence_start && offset <= c.sentence_end + 8) || same[0] || null;
  }

  function chip(n, citation) {
    const b = el("button", { class: "chip", type: "button", text: String(n), "aria-label": "Source " + n });
    if (citation && !citation.supported) {
      b.classList.add("unsupported");
      b.title = "not supported by the passage";
    }
    b.addEventListener("click", () => {
      document.querySelectorAll(".chip.active").forEach((x) => x.classList.remove("active"));
      b.classList.add("active");
      openPanel(n, citation, b);
    });
    return b;
  }

  function renderSources(sources) {
    const list = $("sources");
    list.replaceChildren();
    $("sources-title").hidden = !sources.length;
    for (const s of sources) {
      const open = el("button", { class: "button ghost", type: "button", text: s.title || s.path });
      open.addEventListener("click", () => openPanel(s.marker, null, open));
      list.append(el("li", {}, el("span", { class: "source-num", text: "[" + s.marker + "]" }),
        el("div", { class: "source-body" }, open,
          el("span", { class: "muted", text: " · page " + s.page_start }),
          el("div", { class: "source-snippet", text: s.text }))));
    }
  }

  // -- source panel --------------------------------------------------------------
  let returnFocus = null;
  function openPanel(marker, citation, opener) {
    const source = current && current.sources[marker - 1];
    if (!source) return;
    returnFocus = opener || null;
    const page = citation ? citation.page : source.page_start;
    $("panel-title").textContent = source.title || source.path;
    $("panel-page").textContent = "Page " + page + " · source [" + marker + "]";
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

  function closePanel() {
    if ($("panel").hidden) return;
    $("panel").hidden = true;
    document.querySelectorAll(".chip.active").forEach((x) => x.classList.remove("active"));
    if (returnFocus) returnFocus.focus();
  }
  $("panel-close").addEventListener("click", closePanel);
  $("panel-open").addEventListener("click", async (e) => {
    if (!apiKey) return; // a plain link works; with a key the file needs the header
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

  refreshLibrary();
})();
