// The API key dialog: opened by a 401 or by the key button.
import { $ } from "./dom.js";
import { getKey, setKey } from "./api.js";

let keyChanged = () => {};

// Opened by a 401, once: after Cancel only the key button (marked as needed) opens it.
let keyDismissed = false;
export function askForKey() {
  const dialog = $("key-dialog");
  $("key-button").classList.add("needed");
  if (dialog.open || keyDismissed) return;
  $("key-why").textContent = getKey() ? "The server refused this key: enter the right one."
    : "This server needs an API key.";
  $("key-input").value = "";
  dialog.showModal();
}

function useKey(key) {
  setKey(key);
  keyDismissed = false;
  $("key-button").classList.remove("needed");
  $("key-button").textContent = key ? "API key ✓" : "API key";
  $("key-dialog").close();
  keyChanged();
}

// Wires the dialog; `onChange` runs after a key is saved or forgotten.
export function initKeyDialog(onChange) {
  keyChanged = onChange;
  $("key-button").addEventListener("click", () => {
    $("key-why").textContent = getKey() ? "A key is set for this tab." : "No key is set for this tab.";
    $("key-input").value = "";
    $("key-dialog").showModal();
  });
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("key-input").value.trim()); });
  $("key-forget").addEventListener("click", () => useKey(""));
  $("key-cancel").addEventListener("click", () => { keyDismissed = true; $("key-dialog").close(); });
  $("key-dialog").addEventListener("cancel", () => { keyDismissed = true; }); // Escape
  $("key-button").textContent = getKey() ? "API key ✓" : "API key";
}
