// The runs list (GET /v1/runs): newest first, filtered by the hash's parameters, a page at a time, and
// refreshed while it may change (the first page, or a page with runs not ended).

import { api, sleep } from "./api.js";
import { h, fmt, badge, table, errorBox, shortId, STATUSES, TERMINAL, set } from "./dom.js";
import { runnableNames } from "./runnables.js";

const LIVE_MS = 2000;
const FILTERS = ["status", "runnable_id", "parent_run_id", "created_after", "created_before"];
const trail = { filters: "", cursors: [] }; // the cursors of the pages before this one, for "Previous"
let live = true;

export function duration(run) {
  const ran = run.result?.metadata?.duration_seconds;
  if (typeof ran === "number") return fmt.duration(ran);
  const start = new Date(run.created_at).getTime();
  const end = run.completed_at ?? run.failed_at;
  if (end) return fmt.duration((new Date(end).getTime() - start) / 1000);
  return TERMINAL.has(run.status) ? "—" : `${fmt.duration((Date.now() - start) / 1000)} so far`;
}

function tokens(run) {
  if (run.total_input_tokens === null || run.total_input_tokens === undefined) return "—";
  const total = run.total_input_tokens + (run.total_output_tokens ?? 0);
  return h("span", { title: `${run.total_input_tokens} in (${run.total_cached_tokens ?? 0} cached), ${run.total_output_tokens ?? 0} out` },
    fmt.number(total));
}

export function runsTable(items, names, caption = "Runs") {
  const rows = items.map((run) => h("tr", { "data-run-id": run.id, "data-status": run.status },
    h("td", {}, h("a", { href: `#/run/${run.id}`, class: "mono", title: run.id }, shortId(run.id))),
    h("td", {}, badge(run.status)),
    h("td", {}, run.runnable_id
      ? h("a", { href: `#/runnable/${run.runnable_id}` }, names.get(run.runnable_id) ?? shortId(run.runnable_id))
      : "—"),
    h("td", {}, fmt.date(run.created_at)),
    h("td", {}, duration(run)),
    h("td", { class: "num" }, tokens(run)),
    h("td", { class: "num" }, fmt.cost(run.total_token_cost_usd)),
  ));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No runs")));
  return table(["Run", "Status", "Runnable", "Created", "Duration", "Tokens", "Cost"], rows, caption);
}

// datetime-local (the browser's zone) to RFC 3339 in UTC, as the API takes it
function instant(local) {
  const date = local ? new Date(local) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toISOString() : undefined;
}

function filterForm(params, names, context) {
  const select = (name, label, options) => [
    h("label", { for: `f-${name}` }, label),
    h("select", { id: `f-${name}`, name }, h("option", { value: "" }, "any"),
      options.map(([value, text]) => h("option", { value, selected: params.get(name) === value }, text))),
  ];
  const input = (name, label, type, extra = {}) => [
    h("label", { for: `f-${name}` }, label),
    h("input", { id: `f-${name}`, name, type, value: params.get(name) ?? "", ...extra }),
  ];
  const form = h("form", { class: "filters", method: "post", novalidate: true, onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    context.go("/runs", Object.fromEntries(FILTERS.map((name) => [name, String(data.get(name) ?? "").trim()])));
  } },
  h("div", {}, select("status", "Status", STATUSES.map((s) => [s, s]))),
  h("div", {}, select("runnable_id", "Runnable", [...names].map(([id, name]) => [id, name]))),
  h("div", {}, input("created_after", "Created after", "datetime-local", { step: 1 })),
  h("div", {}, input("created_before", "Created before", "datetime-local", { step: 1 })),
  h("div", {}, input("parent_run_id", "Parent run", "text", { placeholder: "run id", size: 36, spellcheck: "false" })),
  h("div", { class: "actions" },
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("a", { href: "#/runs", class: "button" }, "Clear")));
  return form;
}

export async function page(main, context) {
  const { params, signal } = context;
  const filters = FILTERS.map((name) => `${name}=${params.get(name) ?? ""}`).join("&");
  if (trail.filters !== filters) Object.assign(trail, { filters, cursors: [] });
  const cursor = params.get("cursor") ?? "";
  const names = await runnableNames(signal);
  const query = {
    status: params.get("status"),
    runnable_id: params.get("runnable_id"),
    parent_run_id: params.get("parent_run_id"),
    created_after: instant(params.get("created_after")),
    created_before: instant(params.get("created_before")),
    cursor,
    limit: 20,
  };
  const holder = h("div", { id: "runs" });
  const totals = h("p", { class: "totals", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const liveBox = h("input", { type: "checkbox", id: "live", checked: live, onchange: () => { live = liveBox.checked; } });
  main.append(
    h("div", { class: "title" }, h("h1", {}, "Runs"),
      h("label", { class: "inline" }, liveBox, " Live refresh")),
    filterForm(params, names, context), holder, totals, pager);

  let shown = "";
  const show = (runPage) => {
    const seen = JSON.stringify(runPage.items);
    if (seen === shown) return;
    shown = seen;
    const focused = document.activeElement?.closest?.("tr[data-run-id]")?.dataset.runId;
    set(holder, runsTable(runPage.items, names));
    if (focused) holder.querySelector(`tr[data-run-id="${CSS.escape(focused)}"] a`)?.focus();
    const sums = runPage.totals;
    totals.textContent = `This page: ${runPage.items.length} runs, ${fmt.number(sums.total_input_tokens + sums.total_output_tokens)} tokens, ${fmt.cost(sums.total_token_cost_usd)}`;
    set(pager, 
      trail.cursors.length ? h("button", { type: "button", onclick: () => {
        context.go("/runs", { ...Object.fromEntries(params), cursor: trail.cursors.pop() });
      } }, "Previous") : null,
      runPage.next_cursor ? h("button", { type: "button", onclick: () => {
        trail.cursors.push(cursor);
        context.go("/runs", { ...Object.fromEntries(params), cursor: runPage.next_cursor });
      } }, "Next") : null,
    );
  };
  let runPage;
  try {
    runPage = await api("GET", "/v1/runs", { query, signal });
  } catch (error) {
    set(holder, errorBox(error));
    return;
  }
  show(runPage);
  follow(runPage);

  async function follow(latest) {
    while (!signal.aborted) {
      await sleep(LIVE_MS, signal);
      const changing = !cursor || latest.items.some((run) => !TERMINAL.has(run.status));
      if (signal.aborted || !live || document.hidden || !changing) continue;
      try {
        latest = await api("GET", "/v1/runs", { query, signal });
        show(latest);
      } catch (error) {
        if (error.name === "AbortError") return;
      }
    }
  }
}
