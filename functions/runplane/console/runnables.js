// Runnables: the list (GET /v1/runnables), one runnable's page, and the id -> name map the run pages show.

import { api } from "./api.js";
import { h, fmt, json, facts, table, errorBox, confirmButton, notify, shortId, set } from "./dom.js";

let names = null; // { at, map }: the account's runnables by id, for a few seconds

export async function runnableNames(signal) {
  if (names && Date.now() - names.at < 10_000) return names.map;
  const map = new Map();
  let cursor;
  for (let i = 0; i < 5; i++) { // 500 runnables at most: the rest show by id
    const found = await api("GET", "/v1/runnables", { query: { limit: 100, cursor }, signal });
    for (const item of found.items) map.set(item.id, item.name);
    cursor = found.next_cursor;
    if (!cursor) break;
  }
  names = { at: Date.now(), map };
  return map;
}

export function forgetNames() {
  names = null;
}

export async function page(main, context) {
  const { params, signal } = context;
  const query = { name: params.get("name"), cursor: params.get("cursor"), limit: 50 };
  const found = await api("GET", "/v1/runnables", { query, signal });
  const search = h("input", { id: "f-name", name: "name", type: "search", value: params.get("name") ?? "", placeholder: "exact name" });
  const rows = found.items.map((item) => h("tr", { "data-runnable-id": item.id },
    h("td", {}, h("a", { href: `#/runnable/${item.id}` }, item.name)),
    h("td", {}, item.kind),
    h("td", {}, item.tags.join(", ")),
    h("td", {}, fmt.date(item.updated_at)),
    h("td", {}, h("a", { href: `#/runnable/${item.id}/run` }, "Start a run"))));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No runnables")));
  main.append(
    h("div", { class: "title" }, h("h1", {}, "Runnables"),
      h("a", { href: "#/runnables/new", class: "button primary", id: "new-runnable" }, "New runnable")),
    h("form", { class: "filters", method: "post", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      context.go("/runnables", { name: search.value.trim() });
    } }, h("div", {}, h("label", { for: "f-name" }, "Name"), search),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Find"), h("a", { href: "#/runnables", class: "button" }, "All"))),
    table(["Name", "Kind", "Tags", "Updated", ""], rows, "Runnables"),
    found.next_cursor
      ? h("nav", { class: "pager", "aria-label": "Pages" }, h("a", { class: "button", href: `#/runnables?cursor=${encodeURIComponent(found.next_cursor)}` }, "Next"))
      : "");
}

export async function detailPage(main, context) {
  const { signal } = context;
  const id = context.match[1].toLowerCase();
  const item = await api("GET", `/v1/runnable/${id}`, { signal });
  const problem = h("div");
  main.append(
    h("div", { class: "title" }, h("h1", {}, item.name),
      h("div", { class: "actions" },
        h("a", { href: `#/runnable/${id}/run`, class: "button primary", id: "start-run" }, "Start a run"),
        h("a", { href: `#/runnable/${id}/edit`, class: "button", id: "edit-runnable" }, "Edit"),
        h("a", { href: `#/runs?runnable_id=${id}`, class: "button" }, "Its runs"),
        confirmButton("Delete", "Delete for good", async () => {
          try {
            await api("DELETE", `/v1/runnable/${id}`, { signal });
            forgetNames();
            notify(`Deleted ${item.name}`);
            context.go("/runnables");
          } catch (error) {
            set(problem, errorBox(error, "Delete"));
          }
        }))),
    problem,
    facts([
      ["Id", h("code", {}, item.id)],
      ["Kind", item.kind],
      ["Created", fmt.date(item.created_at)],
      ["Updated", fmt.date(item.updated_at)],
      ["Timeout", item.timeout_seconds ? `${item.timeout_seconds} s` : "none of its own (the deployment's maximum)"],
      ["Max concurrency", item.max_concurrency ?? "the account's limit only"],
      ["Telemetry", item.telemetry_strategy],
      ["Retry on worker lost", item.retry_on_worker_lost ? "yes" : "no"],
      ["Tags", item.tags.join(", ")],
    ]),
    h("section", { "aria-labelledby": "config-title" }, h("h2", { id: "config-title" }, "Config"), json(item.config)),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "input-title" }, h("h2", { id: "input-title" }, "Input schema"),
        item.input_schema ? json(item.input_schema) : h("p", { class: "empty" }, "None: any inputs.")),
      h("section", { "aria-labelledby": "output-title" }, h("h2", { id: "output-title" }, "Output schema"),
        item.output_schema ? json(item.output_schema) : h("p", { class: "empty" }, "None."))),
    h("p", { class: "hint" }, "Runnable ", h("span", { class: "mono" }, shortId(item.id)), " of account ", item.account_id));
}
