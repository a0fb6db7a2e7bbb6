// Asking: the question box, the streamed answer, and its rendering with citation chips
// and per-sentence support markers.
import { $, el, showError } from "./dom.js";
import { authHeaders, apiError } from "./api.js";
import { closePanel, openPanel, renderSources, setSources } from "./sources.js";

let question, answerEl, noticeEl;

export function initAnswer() {
  question = $("question");
  answerEl = $("answer");
  // Shown above the answer when no sentence of it is supported by the sources.
  noticeEl = el("p", { id: "answer-notice", class: "note answer-notice", role: "status", hidden: "" });
  answerEl.before(noticeEl);
  question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("ask-form").requestSubmit(); }
  });
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask(question.value.trim()); });
}

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
  setSources([]);
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

// "citation" events also arrive while streaming; "done" carries them all, so they are not kept.
function onEvent(name, data) {
  if (name === "sources") {
    setSources(data.sources);
    $("answer-meta").textContent = data.sources.length ? "Writing the answer…" : "";
  } else if (name === "token") {
    answerEl.append(document.createTextNode(data.text));
  } else if (name === "done") {
    setSources(data.sources);
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
