// The page: uploads with progress, the library, streamed answers with citation chips.
// All document and answer text is inserted with textContent / text nodes, never innerHTML.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  // -- API key: ?key= once, or typed in the key dialog; kept in sessionStorage -------
  const params = new URLSearchParams(location.search);
  if (params.has("key")) {
    sessionStorage.setItem("apiKey", params.get("key"));
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  let apiKey = sessionStorage.getItem("apiKey") || "";
  const authHeaders = (extra = {}) => (apiKey ? { ...extra, Authorization: "Bearer " + apiKey } : extra);

  // Every API error passes here: its one-line message, HTTP status (0: no answer) and the
  // request id a user can quote. A 401 opens the key dialog.
  function apiError(status, body, requestId, fallback) {
    const error = new Error((body && body.error) || fallback || (status ? "HTTP " + status : "network error"));
    error.status = status;
    error.requestId = (body && body.request_id) || requestId || "";
    if (status === 401) askForKey();
    return error;
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
    } catch (_) { throw apiError(0, null, "", "cannot reach the server"); }
    let body = null;
    try { body = response.status === 204 ? null : await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) throw apiError(response.status, body, response.headers.get("X-Request-ID"));
    return body;
  }

  // An error's message, with its request id in small text.
  function showError(node, error) {
    node.replaceChildren(document.createTextNode(error.message));
    if (error.requestId) node.append(" ", el("small", { class: "request-id", text: "request id " + error.requestId }));
  }

  // Opened by a 401, once: after Cancel only the key button (marked as needed) opens it.
  let keyDismissed = false;
  function askForKey() {
    const dialog = $("key-dialog");
    $("key-button").classList.add("needed");
    if (dialog.open || keyDismissed) return;
    $("key-why").textContent = apiKey ? "The server refused this key: enter the right one."
      : "This server needs an API key.";
    $("key-input").value = "";
    dialog.showModal();
  }

  function useKey(key) {
    apiKey = key;
    keyDismissed = false;
    $("key-button").classList.remove("needed");
    if (key) sessionStorage.setItem("apiKey", key); else sessionStorage.removeItem("apiKey");
    $("key-button").textContent = key ? "API key ✓" : "API key";
    $("key-dialog").close();
    refreshLibrary();
    resumeJobs();
  }
  $("key-button").addEventListener("click", () => {
    $("key-why").textContent = apiKey ? "A key is set for this tab." : "No key is set for this tab.";
    $("key-input").value = "";
    $("key-dialog").showModal();
  });
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("key-input").value.trim()); });
  $("key-forget").addEventListener("click", () => useKey(""));
  $("key-cancel").addEventListener("click", () => { keyDismissed = true; $("key-dialog").close(); });
  $("key-dialog").addEventListener("cancel", () => { keyDismissed = true; }); // Escape
  $("key-button").textContent = apiKey ? "API key ✓" : "API key";

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
    } catch (e) { showError($("health"), e); }
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

  // One row per file: its upload, then its job until that is done, failed or cancelled.
  function uploadRow(name) {
    const status = el("span", { class: "status", text: "uploading" });
    const cancel = el("button", { class: "button ghost cancel", type: "button", text: "Cancel",
      "aria-label": "Cancel " + name, hidden: "" });
    const bar = el("span");
    const note = el("div", { class: "upload-note", hidden: "" });
    const reason = el("div", { class: "reason", hidden: "" });
    const row = el("li", {}, el("div", { class: "upload-row" },
      el("span", { class: "upload-name", text: name, title: name }), cancel, status),
    el("div", { class: "progress" }, bar), note, reason);
    $("uploads").prepend(row);
    return {
      cancel,
      set(label, fraction, kind) {
        status.textContent = label;
        status.className = "status " + (kind || "");
        if (fraction != null) bar.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + "%";
      },
      note(text) { note.hidden = !text; note.textContent = text || ""; },
      error(err) { reason.hidden = !err; if (err) showError(reason, err); else reason.replaceChildren(); },
      fail(err) { this.set("failed", 1, "failed"); this.error(err); cancel.hidden = true; },
    };
  }

  function uploadOne(file) {
    const row = uploadRow(file.name);
    const form = new FormData();
    form.append("files", file, file.name);
    if ($("replace").checked) form.append("replace", "true");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/documents");
    if (apiKey) xhr.setRequestHeader("Authorization", "Bearer " + apiKey);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) row.set("uploading", e.loaded / e.total * 0.5); };
    xhr.onerror = () => row.fail(apiError(0, null, "", "network error: the file did not reach the server"));
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      const requestId = xhr.getResponseHeader("X-Request-ID");
      const jobs = body.jobs || [], refused = body.refused || [];
      if (xhr.status !== 202 && !refused.length) { row.fail(apiError(xhr.status, body, requestId)); return; }
      // A refused file is a row with its reason, not a failed request; the first answer
      // takes this file's row, any other (a request of several files) a row of its own.
      let own = row;
      const rowFor = (name) => { const r = own || uploadRow(name); own = null; return r; };
      for (const r of refused) rowFor(r.filename).fail(apiError(r.status, r, requestId));
      for (const job of jobs) watchJob(job, rowFor(job.filename));
    };
    xhr.send(form);
  }

  // -- jobs ----------------------------------------------------------------------
  // The server keeps jobs across restarts, so a network error or a 5xx only means "not
  // now": poll again, less and less often. Only the job's own status or a 404 ends a row.
  const POLL_MS = 700, MAX_POLL_MS = 15000;
  const FINISHED = ["done", "failed", "cancelled"];
  const watched = new Set();

  function watchJob(job, row) {
    watched.add(job.id);
    const url = "/api/jobs/" + encodeURIComponent(job.id);
    let delay = POLL_MS, ended = false;
    const show = (j) => {
      if (ended) return;
      ended = showJob(j, row);
      if (ended) refreshLibrary();
    };
    row.cancel.addEventListener("click", async () => {
      row.cancel.disabled = true;
      try { show(await api(url + "/cancel", { method: "POST" })); } catch (e) {
        if (e.status !== 409) row.error(e); // 409: it has just finished; the next poll says how
      } finally { row.cancel.disabled = false; }
    });
    const poll = async () => {
      if (ended) return;
      try {
        const j = await api(url);
        delay = POLL_MS;
        row.note("");
        show(j);
      } catch (e) {
        if (e.status === 404) { ended = true; row.fail(e); refreshLibrary(); return; }
        delay = Math.min(delay * 2, MAX_POLL_MS);
        row.set("waiting for the server", null, "waiting");
        row.note(e.message + "; trying again in " + Math.round(delay / 1000) + " s");
      }
      if (!ended) setTimeout(poll, delay);
    };
    show(job);
    if (!ended) setTimeout(poll, delay);
  }

  // The job's state on its row; true once it has finished.
  function showJob(job, row) {
    const p = job.progress || {};
    const finished = FINISHED.includes(job.status);
    row.cancel.hidden = finished;
    if (job.status === "done") {
      const r = job.result || {};
      const saved = (r.path || "").split("/").pop();
      row.set("ready", 1, "done");
      row.note(r.status === "unchanged" ? "already in the library"
        : r.status === "replaced" ? "replaced the document of the same name"
          : saved && saved !== job.filename ? "saved as " + saved : "");
    } else if (job.status === "failed") {
      row.fail(new Error(job.reason || "failed"));
    } else if (job.status === "cancelled") {
      row.set("cancelled", 1, "cancelled");
    } else {
      row.set(job.status === "queued" ? "queued" : (p.stage || "ingesting"),
        p.total ? 0.5 + 0.5 * p.done / p.total : 0.55);
    }
    return finished;
  }

  // Jobs still queued or running when the page opens (a reload, another tab, a restart).
  async function resumeJobs() {
    let listing;
    try { listing = await api("/api/jobs"); } catch (_) { return; }
    const open = (listing.jobs || []).filter((j) => !FINISHED.includes(j.status) && !watched.has(j.id));
    open.sort((a, b) => (a.created_at || 0) - (b.created_at || 0));
    for (const job of open) watchJob(job, uploadRow(job.filename));
  }

  // -- library -------------------------------------------------------------------
  async function refreshLibrary() {
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

  // -- questions -----------------------------------------------------------------
  const question = $("question"), answerEl = $("answer");
  // Shown above the answer when no sentence of it is supported by the sources.
  const noticeEl = el("p", { id: "answer-notice", class: "note answer-notice", role: "status", hidden: "" });
  answerEl.before(noticeEl);
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
    noticeEl.hidden = true;
    $("sources").replaceChildren();
    $("sources-title").hidden = true;
    current = { sources: [], citations: [], answer: null };
    try {
      const response = await fetch("/api/ask", { method: "POST",
        headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ question: text, stream: true }) });
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (_) { /* ignore */ }
        const error = apiError(response.status, body, response.headers.get("X-Request-ID"));
        const retry = response.headers.get("Retry-After");
        if (response.status === 503 && retry) error.message += " (retry in " + retry + " s)";
        throw error;
      }
      await readEvents(response.body.getReader(), onEvent);
    } catch (e) {
      answerEl.className = "answer error";
      showError(answerEl, e);
      answerEl.prepend("Error: ");
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
    const unit = utf16Offsets(text);
    // Insertion points: the model's [n] markers, and inferred citations at their sentence's end.
    const points = [];
    const re = /\[(\d+)\]/g;
    let m;
    while ((m = re.exec(text)) !== null) {
      const n = Number(m[1]);
      points.push({ at: m.index, len: m[0].length, n, c: findCitation(a.citations, n, m.index, unit) });
    }
    const seen = new Set();
    for (const c of a.citations.filter((x) => x.inferred)) {
      const key = c.marker + ":" + c.sentence_end;
      if (seen.has(key)) continue;
      seen.add(key);
      points.push({ at: unit(c.sentence_end), len: 0, n: c.marker, c, inferred: true });
    }
    points.sort((x, y) => x.at - y.at || y.len - x.len);
    let last = 0, next = 0;
    // Append text[last, to) to box with its chips; a point at `to` of no length (an inferred
    // citation at its sentence's end) goes in too when the box is that sentence.
    const fill = (box, to, closing) => {
      for (; next < points.length; next++) {
        const p = points[next];
        if (p.at > to || (p.at === to && !(closing && p.len === 0))) break;
        if (p.at < last) continue;
        if (p.at > last) box.append(document.createTextNode(text.slice(last, p.at)));
        const b = chip(p.n, p.c);
        if (p.inferred) {
          b.classList.add("inferred");
          b.title = "added by the checker: the model did not cite this" +
            (p.c.supported ? "" : " (not supported by source " + p.n + ")");
          box.append(document.createTextNode(" "));
        }
        box.append(b);
        last = p.at + p.len;
      }
      if (to > last) { box.append(document.createTextNode(text.slice(last, to))); last = to; }
    };
    // Each sentence in a span; one the sources do not support is marked (never in a refusal).
    for (const s of a.refused ? [] : (a.sentences || [])) {
      const start = unit(s.start), end = unit(s.end);
      if (start < last) continue;
      fill(answerEl, start, false);
      const box = el("span", { class: "sentence" });
      fill(box, end, true);
      if (s.supported === false) {
        box.classList.add("unsupported");
        box.title = "Not supported by the sources: check it against the documents.";
        box.append(el("span", { class: "unsupported-badge", text: "unsupported",
          title: "No source supports this sentence" }));
      }
      answerEl.append(box);
    }
    fill(answerEl, text.length, true);
    const t = a.timings || {};
    const failed = a.citations.filter((c) => !c.supported).length;
    const noneSupported = !a.refused && a.support === "none";
    noticeEl.hidden = !noneSupported;
    noticeEl.textContent = noneSupported ? a.notice : "";
    $("answer-meta").textContent = a.refused ? "Not found in your documents." :
      (a.citations.length + " citation" + (a.citations.length === 1 ? "" : "s") +
       (failed ? " (" + failed + " not supported)" : "") +
       (t.total_s != null ? " · " + t.total_s.toFixed(1) + " s" : "") +
       (a.generation_tps ? " · " + a.generation_tps.toFixed(0) + " tok/s" : "") +
       (a.notice && !noneSupported ? " · " + a.notice : ""));
    renderSources(a.sources);
  }

  // Python's offsets count code points, JavaScript's UTF-16 units: they differ past U+FFFF.
  function utf16Offsets(text) {
    const units = [0];
    for (const ch of text) units.push(units[units.length - 1] + ch.length);
    return (n) => units[Math.max(0, Math.min(n, units.length - 1))];
  }

  function findCitation(citations, marker, offset, unit = (n) => n) {
    // The citation for this marker whose sentence holds (or ends just before) the marker.
    const same = citations.filter((c) => c.marker === marker && !c.inferred);
    return same.find((c) => offset >= unit(c.sentence_start) && offset <= unit(c.sentence_end) + 8) || same[0] || null;
  }

  function chip(n, citation) {
    const b = el("button", { class: "chip", type: "button", text: String(n), "aria-label": "Source " + n });
    if (citation && !citation.supported) {
      // A failed check is no citation: the chip is struck through, and says so.
      b.classList.add("unsupported");
      b.title = "not supported by source " + n;
      b.setAttribute("aria-label", "Source " + n + ", not supported");
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
  resumeJobs();
})();
