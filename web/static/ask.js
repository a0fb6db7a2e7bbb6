// Asking: the question box, and a question's answer streamed into a new turn below the
// earlier ones. Each question is asked within the open thread (threads.js makes one for
// the first question of a new conversation).
import { $, showError } from "./dom.js";
import { authHeaders, apiError } from "./api.js";
import { addTurn, renderAnswer } from "./answer.js";
import { closePanel } from "./sources.js";
import { answered, ensureThread, setPlaceholder } from "./threads.js";

let question;

export function initAsk() {
  question = $("question");
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
  question.value = "";
  const view = addTurn(text);
  setPlaceholder();
  const box = view.answer;
  box.className = "answer streaming";
  box.setAttribute("aria-live", "polite");
  box.setAttribute("aria-busy", "true");
  view.meta.textContent = "Searching your documents…";
  view.root.scrollIntoView({ block: "nearest" });
  let requestId = "";
  try {
    const threadId = await ensureThread(text);
    const response = await fetch("/api/threads/" + encodeURIComponent(threadId) + "/ask", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({ question: text, stream: true }) })
      .catch(() => { throw apiError(0, null, "", "cannot reach the server"); });
    if (!response.ok) throw await refusal(response);
    requestId = response.headers.get("X-Request-ID") || "";
    let done = false;
    await readEvents(response.body.getReader(), (name, data) => {
      done = onEvent(view, name, data) || done;
    });
    if (!done) throw new Error("The answer was cut off: the connection to the server closed.");
    answered(threadId, view.root);
  } catch (e) {
    if (!e.requestId) e.requestId = requestId; // an error event of the stream
    box.className = "answer error";
    showError(box, e);
    box.prepend("Error: ");
    view.meta.textContent = "";
    if (!question.value) question.value = text; // to ask again
  } finally {
    box.classList.remove("streaming");
    box.setAttribute("aria-busy", "false");
    button.disabled = false;
  }
}

// The error of a refused question, with the wait a busy server (503) asks for.
async function refusal(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  const error = apiError(response.status, body, response.headers.get("X-Request-ID"));
  const retry = response.headers.get("Retry-After");
  if (response.status === 503 && retry) error.message += " (retry in " + retry + " s)";
  return error;
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

// One event of the stream into the turn's view; true once the answer is complete.
// "citation" events also arrive while streaming; "done" carries them all, so they are not kept.
function onEvent(view, name, data) {
  if (name === "sources") {
    view.meta.textContent = data.sources.length ? "Writing the answer…" : "";
  } else if (name === "token") {
    view.answer.append(document.createTextNode(data.text));
  } else if (name === "done") {
    renderAnswer(view, data);
    return true;
  } else if (name === "error") {
    throw new Error(data.error);
  }
  return false;
}
