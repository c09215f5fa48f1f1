// The public API, called with the key this tab signed in with (sessionStorage: gone with the tab, never
// in a URL, a cookie or local storage). The API's base is this folder's parent: /console/../ keeps a stage.

const KEY = "runplane.console.key";
export const base = new URL("../", import.meta.url);
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? "";
    this.issues = Array.isArray(body?.issues) ? body.issues : [];
    this.missingPerms = body?.missingPerms ?? null;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
  whenUnauthorized: (handler) => { onUnauthorized = handler; },
};

// `query` values that are empty are left out. Resolves to the JSON answer (null for 204).
export async function api(method, path, { body, query, signal } = {}) {
  const url = new URL(path.replace(/^\//, ""), base);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", Authorization: `Bearer ${session.key() ?? ""}` };
  const init = { method, headers, signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { error: "The API could not be reached", code: "network_error" });
  }
  const text = reply.status === 204 ? "" : await reply.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!reply.ok) {
    const error = new ApiError(reply.status, data ?? { error: text || reply.statusText, code: "" });
    if (reply.status === 401) onUnauthorized(error);
    throw error;
  }
  return data;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
