// Talking to the server: the API key, the fetch wrapper and the errors it throws.

// -- API key: ?key= once, or typed in the key dialog; kept in sessionStorage -------
const params = new URLSearchParams(location.search);
if (params.has("key")) {
  sessionStorage.setItem("apiKey", params.get("key"));
  params.delete("key");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}
let apiKey = sessionStorage.getItem("apiKey") || "";

export const getKey = () => apiKey;
export function setKey(key) {
  apiKey = key;
  if (key) sessionStorage.setItem("apiKey", key); else sessionStorage.removeItem("apiKey");
}
export const authHeaders = (extra = {}) => (apiKey ? { ...extra, Authorization: "Bearer " + apiKey } : extra);

// What a 401 does (the page opens the key dialog); set by the wiring in app.js.
let unauthorized = () => {};
export function onUnauthorized(handler) { unauthorized = handler; }

// Every API error passes here: its one-line message, HTTP status (0: no answer) and the
// request id a user can quote. A 401 opens the key dialog.
export function apiError(status, body, requestId, fallback) {
  const error = new Error((body && body.error) || fallback || (status ? "HTTP " + status : "network error"));
  error.status = status;
  error.requestId = (body && body.request_id) || requestId || "";
  if (status === 401) unauthorized();
  return error;
}

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
  } catch (_) { throw apiError(0, null, "", "cannot reach the server"); }
  let body = null;
  try { body = response.status === 204 ? null : await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw apiError(response.status, body, response.headers.get("X-Request-ID"));
  return body;
}
