// Conversations: the list of past threads (most recently used first) with Delete, the open
// thread (its turns rendered from their stored JSON, chips and all), New conversation.
import { $, el, showError } from "./dom.js";
import { api } from "./api.js";
import { addTurn, renderAnswer } from "./answer.js";
import { closePanel } from "./sources.js";

let current = null; // the open thread's id; null: a new conversation, made by its first question

const thread = (id) => "/api/threads/" + encodeURIComponent(id);

// The open thread's id; a new conversation becomes a thread named by `title` (its question).
export async function ensureThread(title) {
  if (!current) {
    const created = await api("/api/threads", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ title }) });
    current = created.id;
    refreshThreads();
  }
  return current;
}

// An answer in thread `id` was stored: the list's order changes; and if that thread was
// reopened while the answer streamed (its `turn` is no longer on the page), it is shown again.
export function answered(id, turn) {
  refreshThreads();
  if (id === current && !turn.isConnected) openThread(id);
}

export function setPlaceholder() {
  $("question").placeholder = $("turns").childElementCount
    ? "Ask a follow-up question… (Enter to ask, Shift+Enter for a new line)"
    : "Ask a question about your documents… (Enter to ask, Shift+Enter for a new line)";
}

export function newConversation() {
  closePanel();
  current = null;
  $("turns").replaceChildren();
  markCurrent();
  setPlaceholder();
  $("question").focus();
}

export async function openThread(id) {
  let opened;
  try { opened = await api(thread(id)); } catch (e) {
    if (e.status === 404) await refreshThreads(); // deleted elsewhere
    showError($("threads-status"), e);
    return;
  }
  closePanel();
  current = opened.id;
  $("turns").replaceChildren();
  for (const turn of opened.turns) renderAnswer(addTurn(turn.question), turn.answer);
  markCurrent();
  setPlaceholder();
  $("question").focus(); // under the latest answer, ready for a follow-up
}

export async function refreshThreads() {
  let threads;
  try { threads = (await api("/api/threads")).threads; } catch (e) {
    showError($("threads-status"), e);
    return;
  }
  $("threads-status").textContent = "";
  $("threads-empty").hidden = threads.length > 0;
  $("threads").replaceChildren(...threads.map(item));
  markCurrent();
}

function item(t) {
  const title = t.title || "Untitled conversation";
  const open = el("button", { class: "thread-open", type: "button", title },
    el("span", { class: "thread-title", text: title }),
    el("time", { class: "muted", datetime: new Date(t.updated_at * 1000).toISOString(),
      text: when(t.updated_at) }));
  open.addEventListener("click", () => openThread(t.id));
  const del = el("button", { class: "button danger", type: "button", text: "Delete",
    "aria-label": "Delete conversation " + title });
  del.addEventListener("click", () => remove(t.id, title, del));
  return el("li", { "data-thread": t.id }, open, del);
}

async function remove(id, title, button) {
  if (!confirm("Delete the conversation “" + title + "”?")) return;
  button.disabled = true;
  try { await api(thread(id), { method: "DELETE" }); } catch (e) {
    if (e.status !== 404) { // a 404: already gone
      showError($("threads-status"), e);
      button.disabled = false;
      return;
    }
  }
  if (id === current) newConversation();
  refreshThreads();
}

function markCurrent() {
  for (const li of $("threads").children) {
    const open = li.dataset.thread === current;
    li.classList.toggle("current", open);
    if (open) li.firstChild.setAttribute("aria-current", "true");
    else li.firstChild.removeAttribute("aria-current");
  }
}

// Today: the time; this year: day and month; before: the date with its year.
function when(seconds) {
  const d = new Date(seconds * 1000), now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { day: "numeric", month: "short",
    year: d.getFullYear() === now.getFullYear() ? undefined : "numeric" });
}

export function initThreads() {
  $("new-thread").addEventListener("click", newConversation);
  setPlaceholder();
}
