// The page: uploads with progress, the library, streamed answers with citation chips.
// All document and answer text is inserted with textContent / text nodes, never innerHTML.
// This module only wires the parts together; each lives in its own file:
//   dom.js      $, el, showError
//   api.js      the API key, fetch wrapper, errors with request ids
//   key.js      the API key dialog
//   library.js  the library list and the health line
//   uploads.js  uploads, their jobs, polling with backoff, Cancel
//   answer.js   asking, the streamed answer, citation chips, sentence support
//   sources.js  the sources list and the source panel
import { onUnauthorized } from "./api.js";
import { askForKey, initKeyDialog } from "./key.js";
import { refreshLibrary } from "./library.js";
import { initUploads, resumeJobs } from "./uploads.js";
import { initAnswer } from "./answer.js";
import { initPanel } from "./sources.js";

onUnauthorized(askForKey);
initKeyDialog(() => { refreshLibrary(); resumeJobs(); });
initUploads();
initAnswer();
initPanel();

refreshLibrary();
resumeJobs();
