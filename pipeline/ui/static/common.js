// Shared by the viewer's pages. Everything from the server is untrusted text (LLM content): it is
// put in the page with textContent / text nodes only, never parsed as HTML.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "href") node.setAttribute("href", safeHref(value));
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Links are ours: paths inside the viewer, the API, or fragments. Anything else becomes inert.
function safeHref(value) {
  const text = String(value);
  return /^(\/ui\/|#|\?)/.test(text) ? text : "#";
}

export async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    const error = new Error(body.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

export function showError(container, error) {
  container.replaceChildren(el("p", { className: "error", role: "alert", text: error.message || String(error) }));
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function fmtNumber(value, digits = 3) {
  if (value === null || value === undefined) return "";
  return Number.isInteger(value) ? value.toLocaleString("en") : Number(value).toFixed(digits);
}

export function rolloutHref(rolloutId, spanId) {
  return `/ui/rollouts/${encodeURIComponent(rolloutId)}` + (spanId ? `#span-${encodeURIComponent(spanId)}` : "");
}

export function markNav() {
  const page = document.body.dataset.page;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.nav === page || (page === "rollout" && a.dataset.nav === "rollouts")) a.classList.add("current");
  }
}

export function app() {
  markNav();
  return document.getElementById("app");
}
