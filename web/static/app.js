// The page: uploads with progress, the library, conversations of streamed answers with
// citation chips. All document and answer text is inserted with textContent / text nodes,
// never innerHTML. This module only wires the parts together; each lives in its own file:
//   dom.js      $, el, showError
//   api.js      the API key, fetch wrapper, errors with request ids
//   key.js      the API key dialog
//   library.js  the library list and the health line
//   uploads.js  uploads, their jobs, polling with backoff, Cancel
//   threads.js  the conversations list, reopening and deleting one, New conversation
//   ask.js      asking within the open thread, the streamed answer
//   answer.js   a turn: an answer's JSON rendered with citation chips and sentence support
//   sources.js  a turn's sources list and the source panel
import { onUnauthorized } from "./api.js";
import { askForKey, initKeyDialog } from "./key.js";
import { refreshLibrary } from "./library.js";
import { initUploads, resumeJobs } from "./uploads.js";
import { initThreads, refreshThreads } from "./threads.js";
import { initAsk } from "./ask.js";
import { initPanel } from "./sources.js";

onUnauthorized(askForKey);
initKeyDialog(() => { refreshLibrary(); resumeJobs(); refreshThreads(); });
initUploads();
initThreads();
initAsk();
initPanel();

refreshLibrary();
resumeJobs();
refreshThreads();
