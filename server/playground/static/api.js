// Calls to this server's own API. Paths are relative to the page's address, so the page works behind a
// proxy that serves turnout under a prefix. The API key is the one typed into the page, kept for the tab
// only (sessionStorage), never in the page's files or in copied snippets.

const KEY_STORE = "turnout.playground.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

export function headers(json = true) {
  const out = json ? { "Content-Type": "application/json" } : {};
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

/** An answer that was not 2xx, or an error event in a stream: kept exactly as the API wrote it. */
export class ApiError extends Error {
  constructor(status, statusText, raw) {
    super(messageOf(raw) || `HTTP ${status} ${statusText}`);
    this.status = status;
    this.statusText = statusText;
    this.raw = raw;
  }
}

/** The message inside an OpenAI-shaped ({"error": {"message"}}) or TGI-shaped ({"error": "..."}) body. */
export function messageOf(raw) {
  try {
    const body = JSON.parse(raw);
    if (typeof body?.error === "string") return body.error;
    if (typeof body?.error?.message === "string") return body.error.message;
  } catch {
    // not JSON: the raw text is all there is
  }
  return "";
}

export async function post(path, body, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) throw new ApiError(response.status, response.statusText, await response.text());
  return response;
}

export async function getJson(path) {
  const response = await fetch(path, { headers: headers(false) });
  const raw = await response.text();
  if (!response.ok) throw new ApiError(response.status, response.statusText, raw);
  return JSON.parse(raw);
}

/** The error's display: the status line, and the body as the API wrote it. */
export function renderError(container, error) {
  container.replaceChildren();
  const head = document.createElement("strong");
  const message = document.createElement("p");
  if (error instanceof ApiError) {
    head.textContent = error.status ? `HTTP ${error.status} ${error.statusText}` : "error event in the stream";
    message.textContent = error.message;
    const raw = document.createElement("pre");
    raw.className = "raw";
    raw.textContent = error.raw;
    container.append(head, message, raw);
  } else {
    head.textContent = "request failed";
    message.textContent = String(error?.message || error);
    container.append(head, message);
  }
}
