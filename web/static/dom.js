// Small DOM helpers shared by every part of the page.
// All document and answer text is inserted with textContent / text nodes, never innerHTML.

export const $ = (id) => document.getElementById(id);

export const el = (tag, props = {}, ...children) => {
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

// An error's message, with its request id in small text.
export function showError(node, error) {
  node.replaceChildren(document.createTextNode(error.message));
  if (error.requestId) node.append(" ", el("small", { class: "request-id", text: "request id " + error.requestId }));
}
