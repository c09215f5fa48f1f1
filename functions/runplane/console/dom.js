// Building the page from data: elements and text nodes only. API data is always text (textContent),
// never HTML; the CSP's Trusted Types would refuse an HTML string anyway.

const SVG = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function apply(node, props) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else if (name === "value") node.value = String(value);
    else if (name in node && !(node instanceof SVGElement) && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  return node;
}

// h("a", {href: "#/runs", class: "x", onclick: fn}, "text", child, [more])
export function h(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

export function svg(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG, tag), props), children);
}

// node.replaceChildren, skipping null, undefined and false as h does
export function set(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function json(value) {
  return h("pre", { class: "json" }, value === undefined ? "" : JSON.stringify(value, null, 2));
}

// Run ids are UUIDv7: their first digits are the time, alike for runs started together; the last differ.
export function shortId(id) {
  return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : "";
}

export const fmt = {
  date(value) {
    if (!value) return "—";
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  },
  time(value) {
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString(undefined, { hour12: false });
  },
  duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  },
  number(value) {
    return value === null || value === undefined ? "—" : Number(value).toLocaleString();
  },
  cost(usd) {
    if (usd === null || usd === undefined) return "—";
    return usd === 0 ? "$0" : `$${usd < 0.01 ? usd.toPrecision(2) : usd.toFixed(2)}`;
  },
};

export const TERMINAL = new Set(["completed", "failed", "cancelled", "timeout"]);
export const STATUSES = ["waiting", "running", "completed", "failed", "cancelled", "timeout"];

export function badge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

// The API's error as it words it: message, code, each issue, the missing permissions.
export function errorBox(error, title) {
  const box = h("div", { class: "error", role: "alert" });
  append(box, [
    title ? h("strong", {}, title, ": ") : null,
    h("span", { class: "error-message" }, error.message),
    error.code ? h("code", { class: "error-code" }, error.code) : null,
  ]);
  if (error.issues?.length) {
    box.append(h("ul", {}, error.issues.map((issue) => h("li", {}, h("code", {}, issue.field ?? ""), " ", issue.message ?? ""))));
  }
  if (error.missingPerms?.length) box.append(h("p", {}, "Missing permissions: ", error.missingPerms.join(", ")));
  return box;
}

// A definition list of [label, value] pairs; a null value shows a dash.
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([label, value]) => [
    h("dt", {}, label),
    h("dd", {}, value === null || value === undefined || value === "" ? "—" : value),
  ]));
}

export function table(headers, rows, caption) {
  return h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption ?? headers.join(", ") },
    h("table", {}, caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows)));
}

// A button that asks once more before doing something that cannot be undone.
export function confirmButton(label, confirmLabel, action) {
  const holder = h("span", { class: "confirm" });
  const ask = h("button", { type: "button", class: "danger", onclick: () => {
    holder.replaceChildren(yes, no);
    yes.focus();
  } }, label);
  const yes = h("button", { type: "button", class: "danger", onclick: async () => {
    yes.disabled = true;
    try { await action(); } finally { holder.replaceChildren(ask); }
  } }, confirmLabel);
  const no = h("button", { type: "button", onclick: () => { holder.replaceChildren(ask); ask.focus(); } }, "Keep");
  holder.append(ask);
  return holder;
}

export function notify(text) {
  const notice = $("#notice");
  notice.textContent = text;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { notice.textContent = ""; }, 4000);
}
