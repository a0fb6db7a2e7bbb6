// A turn of the conversation on the page: its question, its answer with citation chips and
// per-sentence support marks, and its sources. The same rendering serves an answer that has
// just streamed in (the SSE "done" event) and one reopened from a stored thread.
import { $, el } from "./dom.js";
import { openPanel, renderSources } from "./sources.js";

// The newest turn's parts carry these ids: "the answer on screen" for scripts and tests.
const LATEST = ["answer-notice", "answer", "answer-meta", "sources-title", "sources"];

// A new turn block for `question`, appended to #turns and made the latest. Its parts are
// returned as a view: { root, notice, answer, meta, sourcesBox, sourcesTitle, sources }.
// Earlier turns fold their sources away (their chips still open them).
export function addTurn(question) {
  const view = {
    notice: el("p", { class: "note answer-notice", role: "status", hidden: "" }),
    answer: el("div", { class: "answer", "aria-busy": "false" }),
    meta: el("p", { class: "muted meta" }),
    sourcesTitle: el("h3", { text: "Sources" }),
    sources: el("ol", { class: "sources" }),
  };
  view.sourcesBox = el("details", { class: "turn-sources", open: "", hidden: "" },
    el("summary", {}, view.sourcesTitle), view.sources);
  view.root = el("article", { class: "card turn" },
    el("h2", { class: "turn-question", text: question }),
    view.notice, view.answer, view.meta, view.sourcesBox);
  for (const id of LATEST) $(id)?.removeAttribute("id");
  [view.notice, view.answer, view.meta, view.sourcesTitle, view.sources]
    .forEach((node, i) => { node.id = LATEST[i]; });
  $("turns").querySelectorAll(".turn-sources").forEach((box) => { box.open = false; });
  $("turns").append(view.root);
  return view;
}

// Render an answer's JSON (/api/ask's answer, the "done" event, a stored turn) into a view.
export function renderAnswer(view, a) {
  const box = view.answer;
  box.replaceChildren();
  box.className = "answer" + (a.refused ? " not-found" : "");
  const text = a.answer;
  const unit = utf16Offsets(text);
  const open = (n, citation, opener) => openPanel(a.sources, n, citation, opener);
  const points = insertionPoints(a, unit);
  let last = 0, next = 0;
  // Append text[last, to) to `into` with its chips; a point at `to` of no length (an
  // inferred citation at its sentence's end) goes in too when `into` is that sentence.
  const fill = (into, to, closing) => {
    for (; next < points.length; next++) {
      const p = points[next];
      if (p.at > to || (p.at === to && !(closing && p.len === 0))) break;
      if (p.at < last) continue;
      if (p.at > last) into.append(document.createTextNode(text.slice(last, p.at)));
      const b = chip(p.n, p.c, open);
      if (p.inferred) {
        b.classList.add("inferred");
        b.title = "added by the checker: the model did not cite this" +
          (p.c.supported ? "" : " (not supported by source " + p.n + ")");
        into.append(document.createTextNode(" "));
      }
      into.append(b);
      last = p.at + p.len;
    }
    if (to > last) { into.append(document.createTextNode(text.slice(last, to))); last = to; }
  };
  // Each sentence in a span; one the sources do not support is marked (never in a refusal).
  for (const s of a.refused ? [] : (a.sentences || [])) {
    const start = unit(s.start), end = unit(s.end);
    if (start < last) continue;
    fill(box, start, false);
    const span = el("span", { class: "sentence" });
    fill(span, end, true);
    if (s.supported === false) {
      span.classList.add("unsupported");
      span.title = "Not supported by the sources: check it against the documents.";
      span.append(el("span", { class: "unsupported-badge", text: "unsupported",
        title: "No source supports this sentence" }));
    }
    box.append(span);
  }
  fill(box, text.length, true);
  renderMeta(view, a);
  renderSources(view.sources, view.sourcesBox, a.sources, open);
}

// Where chips go: the model's [n] markers, and inferred citations at their sentence's end.
function insertionPoints(a, unit) {
  const text = a.answer;
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
  return points.sort((x, y) => x.at - y.at || y.len - x.len);
}

function renderMeta(view, a) {
  const t = a.timings || {};
  const failed = a.citations.filter((c) => !c.supported).length;
  const noneSupported = !a.refused && a.support === "none";
  view.notice.hidden = !noneSupported;
  view.notice.textContent = noneSupported ? a.notice : "";
  view.meta.textContent = a.refused ? "Not found in your documents." :
    (a.citations.length + " citation" + (a.citations.length === 1 ? "" : "s") +
     (failed ? " (" + failed + " not supported)" : "") +
     (t.total_s != null ? " · " + t.total_s.toFixed(1) + " s" : "") +
     (a.generation_tps ? " · " + a.generation_tps.toFixed(0) + " tok/s" : "") +
     (a.notice && !noneSupported ? " · " + a.notice : ""));
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

function chip(n, citation, open) {
  const b = el("button", { class: "chip", type: "button", text: String(n), "aria-label": "Source " + n });
  if (citation && !citation.supported) {
    // A failed check is no citation: the chip is struck through, and says so.
    b.classList.add("unsupported");
    b.title = "not supported by source " + n;
    b.setAttribute("aria-label", "Source " + n + ", not supported");
  }
  if (citation && citation.ocr) b.title = (b.title ? b.title + "; " : "") + "text read by OCR";
  b.addEventListener("click", () => {
    document.querySelectorAll(".chip.active").forEach((x) => x.classList.remove("active"));
    b.classList.add("active");
    open(n, citation, b);
  });
  return b;
}
