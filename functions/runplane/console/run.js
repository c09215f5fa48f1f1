// One run: its RunState, its state and partial outputs, its log and event timeline following
// GET /v1/run/{id}/events (a long poll with the key in the Authorization header: an EventSource could
// only carry a credential in its URL), its usage, child runs, callback deliveries; cancel and redeliver.

import { api, sleep } from "./api.js";
import { h, fmt, badge, json, facts, table, errorBox, notify, shortId, TERMINAL, set } from "./dom.js";
import { runnableNames } from "./runnables.js";
import { runsTable, duration } from "./runs.js";

const WAIT = 20; // seconds a long poll waits for an event (the API allows 25)

function runLink(id) {
  return id ? h("a", { href: `#/run/${id}`, class: "mono" }, id) : null;
}

function summary(run, names) {
  const meta = run.result?.metadata ?? {};
  return facts([
    ["Status", badge(run.status)],
    ["Runnable", run.runnable_id ? h("a", { href: `#/runnable/${run.runnable_id}` }, names.get(run.runnable_id) ?? run.runnable_id) : null],
    ["Parent run", runLink(run.parent_run_id)],
    ["Created", fmt.date(run.created_at)],
    run.completed_at ? ["Completed", fmt.date(run.completed_at)] : null,
    run.failed_at ? ["Failed", fmt.date(run.failed_at)] : null,
    ["Duration", duration(run)],
    ["Attempts", meta.attempts ?? null],
    ["Created by", run.created_by ? h("code", {}, run.created_by) : null],
    ["Input tokens", fmt.number(run.total_input_tokens)],
    ["Cached tokens", fmt.number(run.total_cached_tokens)],
    ["Output tokens", fmt.number(run.total_output_tokens)],
    ["Cost", fmt.cost(run.total_token_cost_usd)],
    run.experiment_id ? ["Experiment", run.experiment_id] : null,
    run.experiment_candidate_id ? ["Candidate", run.experiment_candidate_id] : null,
    run.telemetry_span_id ? ["Telemetry span", h("code", {}, run.telemetry_span_id)] : null,
  ]);
}

function usageTable(usage) {
  if (!usage?.length) return h("p", { class: "empty" }, "No model usage recorded.");
  return table(["Provider", "Model", "Prompt tokens", "Cached tokens", "Completion tokens"],
    usage.map((u) => h("tr", {}, h("td", {}, u.provider), h("td", {}, u.model),
      h("td", { class: "num" }, fmt.number(u.prompt_tokens)), h("td", { class: "num" }, fmt.number(u.cached_tokens)),
      h("td", { class: "num" }, fmt.number(u.completion_tokens)))), "Usage per model");
}

function section(title, id, ...children) {
  return h("section", { id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), ...children);
}

function timelineItem(event) {
  const detail = [];
  if (event.type === "status") {
    detail.push(badge(event.status), " ", event.reason ?? "");
    if (event.attempt) detail.push(` (attempt ${event.attempt})`);
    if (event.waiting_for) detail.push(` — waits for a slot: ${event.waiting_for.scope} limit ${event.waiting_for.limit}`);
    if (event.error) detail.push(" — ", h("span", { class: "error-message" }, event.error.message), event.error.code ? h("code", {}, event.error.code) : null);
  } else if (event.type === "logs") {
    detail.push(`${event.lines?.length ?? 0} log line${event.lines?.length === 1 ? "" : "s"}`);
  } else {
    detail.push(event.type === "state" ? "state updated" : "partial outputs updated");
  }
  return h("li", { "data-seq": event.seq, "data-type": event.type },
    h("time", { datetime: event.at }, fmt.time(event.at)), " ", h("span", { class: "seq" }, `#${event.seq}`), " ", detail);
}

function logLine(line) {
  return h("div", { class: `line stream-${line.stream}` },
    h("time", { datetime: line.at }, fmt.time(line.at)), " ",
    h("span", { class: "stream" }, line.stream), " ",
    h("span", { class: "message" }, line.message),
    line.fields ? h("span", { class: "fields" }, " ", JSON.stringify(line.fields)) : null);
}

function deliveryView(delivery) {
  const attempts = delivery.attempts.map((a) => h("tr", {},
    h("td", { class: "num" }, a.number), h("td", {}, fmt.date(a.started_at)),
    h("td", {}, a.status_code ?? "none"), h("td", { class: "num" }, `${a.latency_ms} ms`), h("td", {}, a.error ?? "")));
  return h("article", { class: "delivery", "data-state": delivery.state, "data-attempts": delivery.attempts.length },
    facts([
      ["Event", delivery.event],
      ["State", h("span", { class: `badge delivery-${delivery.state}` }, delivery.state)],
      ["URL", h("code", {}, delivery.url)],
      ["Message id", h("code", {}, delivery.id)],
      ["Created", fmt.date(delivery.created_at)],
      delivery.next_attempt_at ? ["Next attempt", fmt.date(delivery.next_attempt_at)] : null,
      delivery.finished_at ? ["Finished", fmt.date(delivery.finished_at)] : null,
    ]),
    attempts.length ? table(["#", "Started", "Status", "Latency", "Error"], attempts, "Attempts") : h("p", { class: "empty" }, "No attempt yet."));
}

export async function page(main, context) {
  const { signal } = context;
  const id = context.match[1].toLowerCase();
  const names = await runnableNames(signal);
  let run = await api("GET", `/v1/run/${id}`, { signal });

  const status = h("span", { id: "run-status" });
  const actions = h("div", { class: "actions" });
  const message = h("div");
  const facts_ = h("div", { id: "run-facts" });
  const state = h("div", { id: "run-state" });
  const outputs = h("div", { id: "run-outputs" });
  const error = h("div", { id: "run-error" });
  const usage = h("div", { id: "run-usage" });
  const metadata = h("div", { id: "run-metadata" });
  const log = h("div", { id: "run-log", class: "log", role: "log", tabindex: 0, "aria-label": "Log" });
  const timeline = h("ol", { id: "run-timeline", class: "timeline" });
  const children = h("div", { id: "run-children" });
  const callbacks = h("div", { id: "run-callbacks" });
  const following = h("p", { id: "following", class: "hint", "aria-live": "polite" });

  main.append(
    h("div", { class: "title" }, h("h1", {}, "Run ", h("span", { class: "mono", title: id }, shortId(id))), status, actions),
    h("p", { class: "mono hint" }, id), message,
    h("div", { class: "columns" },
      section("Summary", "summary", facts_),
      h("div", {}, section("State", "state", state), section("Outputs", "outputs", error, outputs),
        section("Metadata", "metadata", metadata))),
    section("Usage", "usage", usage),
    section("Log", "log", following, log),
    section("Timeline", "timeline", timeline),
    section("Child runs", "children", children),
    section("Callbacks", "callbacks", callbacks));

  const show = () => {
    set(status, badge(run.status));
    set(facts_, summary(run, names));
    set(state, run.state ? json(run.state) : h("p", { class: "empty" }, "No state."));
    set(outputs, run.result?.outputs ? json(run.result.outputs) : h("p", { class: "empty" }, "No outputs yet."));
    set(error, run.result?.error
      ? h("div", { class: "error" }, h("span", { class: "error-message" }, run.result.error.message), run.result.error.code ? h("code", { class: "error-code" }, run.result.error.code) : null)
      : "");
    set(usage, usageTable(run.result?.usage), run.result?.usage?.length
      ? h("p", { class: "hint" }, `Total cost ${fmt.cost(run.total_token_cost_usd)} (the API gives the cost per run, not per model).`) : "");
    set(metadata, run.metadata && Object.keys(run.metadata).length ? json(run.metadata) : h("p", { class: "empty" }, "None."));
    const cancellable = !TERMINAL.has(run.status);
    if (cancellable !== Boolean(actions.firstChild)) { // kept as is otherwise: it may have the focus
      set(actions, cancellable ? h("button", { type: "button", id: "cancel", class: "danger", onclick: cancel }, "Cancel run") : null);
    }
  };

  async function cancel() {
    message.replaceChildren();
    try {
      run = await api("POST", `/v1/run/${id}/cancel`, { signal });
      show();
      notify(run.status === "cancelled" ? "Run cancelled" : "Cancellation asked for: the run ends shortly");
    } catch (failure) {
      if (failure.name !== "AbortError") set(message, errorBox(failure, "Cancel"));
    }
  }

  async function loadChildren() {
    try {
      const found = await api("GET", "/v1/runs", { query: { parent_run_id: id, limit: 20 }, signal });
      set(children, found.items.length ? runsTable(found.items, names, "Child runs") : h("p", { class: "empty" }, "No child runs."),
        found.next_cursor ? h("a", { href: `#/runs?parent_run_id=${id}` }, "All child runs") : "");
    } catch (failure) {
      if (failure.name !== "AbortError") set(children, errorBox(failure));
    }
  }

  async function loadCallbacks() {
    let found;
    try {
      found = await api("GET", `/v1/run/${id}/callbacks`, { signal });
    } catch (failure) {
      if (failure.name !== "AbortError") set(callbacks, errorBox(failure));
      return null;
    }
    const problem = h("div");
    const redeliver = h("button", { type: "button", id: "redeliver", onclick: async () => {
      problem.replaceChildren();
      redeliver.disabled = true;
      try {
        await api("POST", `/v1/run/${id}/callbacks/redeliver`, { signal });
        notify("Redelivery enqueued");
        await watchCallbacks(found.items);
      } catch (failure) {
        if (failure.name !== "AbortError") set(problem, errorBox(failure, "Redeliver"));
      } finally {
        redeliver.disabled = false;
      }
    } }, "Redeliver");
    set(callbacks, 
      found.items.length ? found.items.map(deliveryView) : h("p", { class: "empty" }, "No callback deliveries (the run has no callback_url, or none was sent yet)."),
      found.items.length && TERMINAL.has(run.status) ? h("div", { class: "actions" }, redeliver) : "", problem);
    return found.items;
  }

  // After a redelivery: reload until an attempt more was made (or 30 s pass).
  async function watchCallbacks(before) {
    const made = (items) => items.reduce((sum, d) => sum + d.attempts.length, 0);
    for (let i = 0; i < 30 && !signal.aborted; i++) {
      await sleep(1000, signal);
      const items = await loadCallbacks();
      if (items && made(items) > made(before)) return;
    }
  }

  show();
  loadChildren();
  loadCallbacks();
  await follow();

  async function follow() {
    let after = 0;
    let lines = 0;
    following.textContent = TERMINAL.has(run.status) ? "" : "Following the run…";
    while (!signal.aborted) {
      let events;
      try {
        events = await api("GET", `/v1/run/${id}/events`, { query: { after, wait: TERMINAL.has(run.status) ? 0 : WAIT }, signal });
      } catch (failure) {
        if (failure.name === "AbortError" || signal.aborted) return;
        set(message, errorBox(failure, "Following the run"));
        await sleep(3000, signal);
        continue;
      }
      message.replaceChildren();
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      for (const event of events.events) {
        timeline.append(timelineItem(event));
        if (event.type === "logs") {
          for (const line of event.lines ?? []) log.append(logLine(line));
          lines += event.lines?.length ?? 0;
        } else if (event.type === "state") {
          run = { ...run, state: event.state };
        } else if (event.type === "output") {
          run = { ...run, result: { ...(run.result ?? {}), outputs: event.outputs } };
        } else {
          run = { ...run, status: event.status };
        }
      }
      if (atBottom) log.scrollTop = log.scrollHeight;
      after = events.last_seq;
      if (events.events.length) show();
      if (events.done) {
        run = await api("GET", `/v1/run/${id}`, { signal });
        show();
        if (!lines) log.append(h("p", { class: "empty" }, "No log lines."));
        following.textContent = `The run ended ${run.status}.`;
        loadChildren();
        loadCallbacks();
        return;
      }
    }
  }
}
