// The console's shell: sign-in, the header, and the hash routes (#/runs, #/run/<id>, …). Each page gets a
// context whose signal aborts its requests and timers when another page replaces it.

import { api, session, ApiError } from "./api.js";
import { $, h, errorBox, set } from "./dom.js";
import * as runs from "./runs.js";
import * as run from "./run.js";
import * as runnables from "./runnables.js";
import * as forms from "./runnable_forms.js";
import * as account from "./account.js";

const ID = "([0-9a-fA-F-]{36})";
const ROUTES = [
  [/^\/runs$/, "runs", runs.page],
  [new RegExp(`^/run/${ID}$`), "runs", run.page],
  [/^\/runnables$/, "runnables", runnables.page],
  [/^\/runnables\/new$/, "runnables", forms.editPage],
  [new RegExp(`^/runnable/${ID}$`), "runnables", runnables.detailPage],
  [new RegExp(`^/runnable/${ID}/edit$`), "runnables", forms.editPage],
  [new RegExp(`^/runnable/${ID}/run$`), "runnables", forms.startPage],
  [/^\/account$/, "account", account.page],
];

let current = null; // the shown page's AbortController
let loaded = false; // after the first page, the focus moves to each new page's content
export const me = { account: null, key: null, admin: null };

function route() {
  const [path, query] = (location.hash.replace(/^#/, "") || "/runs").split("?");
  return { path, params: new URLSearchParams(query ?? "") };
}

export function go(path, params) {
  const query = params ? new URLSearchParams([...Object.entries(params)].filter(([, v]) => v)).toString() : "";
  location.hash = `#${path}${query ? `?${query}` : ""}`;
}

async function render() {
  current?.abort();
  current = new AbortController();
  const main = $("#main");
  if (!session.key()) {
    loaded = true;
    return signInPage(main);
  }
  const { path, params } = route();
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.dataset.section === found?.[1]);
  }
  const context = { signal: current.signal, params, match: found ? path.match(found[0]) : null, go, me };
  main.replaceChildren();
  if (!found) {
    main.append(h("h1", {}, "Not found"), h("p", {}, "No console page here. ", h("a", { href: "#/runs" }, "Runs")));
    return;
  }
  try {
    await found[2](main, context);
  } catch (error) {
    if (error.name === "AbortError" || context.signal.aborted) return;
    if (!(error instanceof ApiError)) console.error(error);
    main.append(errorBox(error instanceof ApiError ? error : { message: String(error) }));
  }
  if (loaded && document.activeElement === document.body) main.focus({ preventScroll: true });
  loaded = true;
}

function signInPage(main, problem) {
  $("#nav").hidden = true;
  $("#who").hidden = true;
  const input = h("input", {
    id: "key", name: "key", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, placeholder: "rpk_…", "aria-describedby": "key-hint",
  });
  const form = h("form", { class: "signin", method: "post", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    session.signIn(key);
    input.value = "";
    try {
      await loadMe();
    } catch (error) {
      session.signOut();
      signInPage(main, error);
      return;
    }
    render();
  } },
  h("h1", {}, "Sign in"),
  h("label", { for: "key" }, "API key"),
  input,
  h("p", { id: "key-hint", class: "hint" },
    "Kept in this tab's session storage only, and sent to this API alone; it is forgotten when the tab closes."),
  problem ? errorBox(problem) : null,
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  set(main, form);
  input.focus();
}

// The account and the signed-in key, with its scopes (GET /v1/account names the caller's key).
async function loadMe() {
  me.account = await api("GET", "/v1/account");
  me.key = me.account.key;
  me.admin = me.key.scopes.includes("admin");
  showWho();
}

function showWho() {
  const who = $("#who");
  set(who,
    h("span", {}, "Account ", h("strong", { id: "who-account" }, me.account.account_id)),
    h("span", { id: "who-scopes", class: "scopes", title: `Key ${me.key.id}` }, "Scopes: ", me.key.scopes.join(", ")),
    h("button", { type: "button", id: "sign-out", onclick: () => { session.signOut(); render(); } }, "Sign out"),
  );
  who.hidden = false;
  $("#nav").hidden = false;
}

session.whenUnauthorized((error) => {
  session.signOut();
  current?.abort();
  signInPage($("#main"), error);
});

async function start() {
  if (session.key()) {
    try {
      await loadMe();
    } catch (error) {
      if (session.key()) $("#main").replaceChildren(errorBox(error));
      return;
    }
  }
  render();
}

window.addEventListener("hashchange", render);
start();
