// Uploads and their jobs: one row per file, with progress, refusals, Cancel, and polling
// that backs off while the server is away.
import { $, el, showError } from "./dom.js";
import { api, apiError, getKey } from "./api.js";
import { refreshLibrary } from "./library.js";

export function initUploads() {
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
}

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
  if (getKey()) xhr.setRequestHeader("Authorization", "Bearer " + getKey());
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
export async function resumeJobs() {
  let listing;
  try { listing = await api("/api/jobs"); } catch (_) { return; }
  const open = (listing.jobs || []).filter((j) => !FINISHED.includes(j.status) && !watched.has(j.id));
  open.sort((a, b) => (a.created_at || 0) - (b.created_at || 0));
  for (const job of open) watchJob(job, uploadRow(job.filename));
}
