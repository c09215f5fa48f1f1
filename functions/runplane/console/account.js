// The account: budgets, rate limit and concurrency (GET /v1/account), usage by day (GET
// /v1/account/usage), the callback signing secret, API keys (admin), and the dead callbacks of the last 7
// days (GET /v1/callbacks/dead), replayed all at once or per run.

import { api } from "./api.js";
import { h, fmt, facts, table, errorBox, confirmButton, notify, set } from "./dom.js";
import { barChart, everyDay } from "./chart.js";

const SCOPES = ["runs:read", "runs:write", "runnables:read", "runnables:write", "admin"];
const DAY = 86_400_000;

function section(title, id, ...children) {
  return h("section", { id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), ...children);
}

function budget(used, limit, format) {
  if (limit === null || limit === undefined) return `${format(used)} used, no budget`;
  return h("span", {}, h("meter", { min: 0, max: limit, value: Math.min(used, limit), high: limit * 0.8, optimum: 0 }),
    ` ${format(used)} of ${format(limit)}`);
}

function overview(view) {
  const { credits, rate_limit: rate, concurrency } = view;
  return facts([
    ["Account", h("strong", {}, view.account_id)],
    ["Organization id", h("code", {}, view.organization_id)],
    ["Spend", budget(credits.used_usd, credits.limit_usd, fmt.cost)],
    ["Runs", budget(credits.used_runs, credits.limit_runs, fmt.number)],
    ["Rate limit per key", rate.burst ? `${rate.per_second}/s, bursts of ${rate.burst}` : "off"],
    ["Concurrency", concurrency.max_concurrency === null
      ? "no limit"
      : h("span", { id: "concurrency" }, budget(concurrency.running ?? 0, concurrency.max_concurrency, fmt.number), " running")],
  ]);
}

function usageSection(signal) {
  const today = new Date().toISOString().slice(0, 10);
  const start = h("input", { type: "date", id: "usage-start", value: new Date(Date.now() - 29 * DAY).toISOString().slice(0, 10) });
  const end = h("input", { type: "date", id: "usage-end", value: today });
  const out = h("div", { id: "usage-out" });
  const load = async () => {
    try {
      const usage = await api("GET", "/v1/account/usage", { query: { start: start.value, end: end.value }, signal });
      const days = everyDay(usage.start, usage.end, usage.days);
      set(out, 
        facts([
          ["Period", `${usage.start} to ${usage.end} (UTC)`],
          ["Input tokens", `${fmt.number(usage.total_input_tokens)} (${fmt.number(usage.total_cached_tokens)} cached)`],
          ["Output tokens", fmt.number(usage.total_output_tokens)],
          ["Cost", h("span", { id: "usage-cost" }, fmt.cost(usage.total_token_cost_usd))],
          usage.unpriced_usage ? ["Unpriced usage entries", usage.unpriced_usage] : null,
          ["Resources created", `${fmt.number(usage.resources_created)} (${fmt.number(usage.resource_bytes_created)} bytes)`],
        ]),
        h("div", { class: "charts" },
          barChart({ days, label: "Tokens per day", format: compact, series: [
            { key: "total_input_tokens", label: "input", cls: "s1" }, { key: "total_output_tokens", label: "output", cls: "s2" }] }),
          barChart({ days, label: "Cost per day", format: fmt.cost, least: 0.01, series: [{ key: "total_token_cost_usd", label: "cost", cls: "s3" }] })),
        h("details", {}, h("summary", {}, "Usage as a table"),
          table(["Day", "Input tokens", "Cached", "Output tokens", "Cost"], usage.days.map((d) => h("tr", {},
            h("td", {}, d.date), h("td", { class: "num" }, fmt.number(d.total_input_tokens)), h("td", { class: "num" }, fmt.number(d.total_cached_tokens)),
            h("td", { class: "num" }, fmt.number(d.total_output_tokens)), h("td", { class: "num" }, fmt.cost(d.total_token_cost_usd)))), "Usage by day")));
    } catch (error) {
      if (error.name !== "AbortError") set(out, errorBox(error));
    }
  };
  const form = h("form", { class: "filters", method: "post", novalidate: true, onsubmit: (event) => { event.preventDefault(); load(); } },
    h("div", {}, h("label", { for: "usage-start" }, "From"), start),
    h("div", {}, h("label", { for: "usage-end" }, "To"), end),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Show")));
  load();
  return section("Usage by day", "usage", form, out);
}

function compact(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(value >= 1e7 ? 0 : 1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(value >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(value));
}

function secretSection(signal) {
  const out = h("div", { id: "secret-out" });
  const showSecret = (secret) => set(out, facts([
    ["Secret", h("code", { id: "secret", class: "secret" }, secret.secret)],
    secret.previous_valid_until ? ["Previous secret signs until", fmt.date(secret.previous_valid_until)] : null,
  ]), h("button", { type: "button", onclick: () => set(out, reveal) }, "Hide"));
  const reveal = h("button", { type: "button", id: "reveal-secret", onclick: async () => {
    try {
      showSecret(await api("GET", "/v1/callbacks/secret", { signal }));
    } catch (error) {
      if (error.name !== "AbortError") set(out, reveal, errorBox(error));
    }
  } }, "Reveal the secret");
  out.append(reveal);
  const rotate = confirmButton("Rotate", "Rotate now", async () => {
    try {
      showSecret(await api("POST", "/v1/callbacks/secret/rotate", { signal }));
      notify("Secret rotated: the previous one signs too for a while");
    } catch (error) {
      set(out, reveal, errorBox(error, "Rotate"));
    }
  });
  return section("Callback signing secret", "signing",
    h("p", { class: "hint" }, "Receivers verify each callback's webhook-signature with it (Standard Webhooks). Admin keys only."),
    out, h("div", { class: "actions" }, rotate));
}

function keysSection(signal, me) {
  const list = h("div", { id: "keys-list" });
  const created = h("div", { id: "key-created", "aria-live": "polite" });
  const load = async () => {
    let keys;
    try {
      keys = await api("GET", "/v1/keys", { signal });
    } catch (error) {
      if (error.name !== "AbortError") set(list, errorBox(error));
      return;
    }
    const own = me.key.id;
    set(list, table(["Id", "Name", "Scopes", "Created", "State", ""], keys.items.map((key) => h("tr", { "data-key-id": key.id },
      h("td", {}, h("code", {}, key.id), key.id === own ? " (this key)" : ""),
      h("td", {}, key.name ?? "—"),
      h("td", {}, key.scopes.join(", ")),
      h("td", {}, fmt.date(key.created_at)),
      h("td", {}, key.revoked_at ? `revoked ${fmt.date(key.revoked_at)}` : "active"),
      h("td", {}, key.revoked_at ? "" : confirmButton("Revoke", `Revoke ${key.id}`, async () => {
        try {
          await api("DELETE", `/v1/keys/${key.id}`, { signal });
          notify(`Key ${key.id} revoked`);
          load();
        } catch (error) {
          list.prepend(errorBox(error, "Revoke"));
        }
      })))), "API keys"));
  };
  const name = h("input", { type: "text", id: "key-name", maxlength: 200 });
  const boxes = SCOPES.map((scope) => h("input", { type: "checkbox", value: scope, id: `scope-${scope.replace(":", "-")}`, checked: scope !== "admin" }));
  const form = h("form", { class: "form", method: "post", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    created.replaceChildren();
    const body = { scopes: boxes.filter((box) => box.checked).map((box) => box.value) };
    if (name.value.trim()) body.name = name.value.trim();
    try {
      const key = await api("POST", "/v1/keys", { body, signal });
      set(created, h("div", { class: "created" }, h("p", {}, "The new key, shown this once: store it now."),
        h("code", { class: "secret" }, key.api_key)));
      name.value = "";
      load();
    } catch (error) {
      if (error.name !== "AbortError") set(created, errorBox(error, "Create"));
    }
  } },
  h("div", { class: "field" }, h("label", { for: "key-name" }, "Name"), name),
  h("fieldset", {}, h("legend", {}, "Scopes"), boxes.map((box) => h("label", { class: "inline", for: box.id }, box, " ", box.value))),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Create a key")));
  if (me.admin) load();
  else list.append(h("p", { class: "hint" }, "Listing and revoking keys needs an admin key."));
  return section("API keys", "keys", list, h("details", {}, h("summary", {}, "Create a key"), form, created));
}

function deadSection(signal) {
  const out = h("div", { id: "dead-list" });
  const problem = h("div");
  const act = async (button, path, done) => {
    problem.replaceChildren();
    button.disabled = true;
    try {
      done(await api("POST", path, { body: {}, signal }));
      load();
    } catch (error) {
      if (error.name !== "AbortError") set(problem, errorBox(error, button.textContent));
    } finally {
      button.disabled = false;
    }
  };
  const replayAll = h("button", { type: "button", id: "replay-dead", onclick: () => act(replayAll, "/v1/callbacks/dead/replay",
    (replay) => notify(`${replay.webhook_ids.length} callbacks replayed${replay.more ? "; more remain: replay again" : ""}`)) }, "Replay all");
  const row = (delivery) => {
    const last = delivery.attempts.at(-1);
    const redeliver = h("button", { type: "button", onclick: () => act(redeliver, `/v1/run/${delivery.run_id}/callbacks/redeliver`,
      () => notify(`Redelivery of ${delivery.run_id} enqueued`)) }, "Redeliver");
    return h("tr", { "data-delivery-id": delivery.id },
      h("td", {}, h("a", { href: `#/run/${delivery.run_id}`, class: "mono" }, delivery.run_id)),
      h("td", {}, delivery.event),
      h("td", { class: "url" }, delivery.url),
      h("td", {}, last ? [last.status_code ?? "no answer", last.error ? ` ${last.error}` : ""] : "—"),
      h("td", {}, fmt.date(delivery.finished_at)),
      h("td", {}, delivery.event === "completed" ? redeliver : ""));
  };
  async function load() {
    try {
      const page = await api("GET", "/v1/callbacks/dead", { query: { limit: 100 }, signal });
      replayAll.disabled = !page.items.length;
      set(out, page.items.length
        ? table(["Run", "Event", "URL", "Last attempt", "Died", ""], page.items.map(row), "Dead callbacks")
        : h("p", { class: "empty" }, "No callback died in the last 7 days."),
      page.next_cursor ? h("p", { class: "hint" }, "The newest 100 are listed.") : "");
    } catch (error) {
      if (error.name !== "AbortError") set(out, errorBox(error));
    }
  }
  load();
  return section("Dead callbacks", "dead",
    h("p", { class: "hint" }, "Deliveries that exhausted their retries in the last 7 days. Replay sends them again, same webhook-id."),
    out, h("div", { class: "actions" }, replayAll), problem);
}

export async function page(main, context) {
  const { signal, me } = context;
  const view = await api("GET", "/v1/account", { signal });
  main.append(
    h("h1", {}, "Account"),
    section("Budgets and limits", "limits", overview(view)),
    usageSection(signal),
    secretSection(signal),
    keysSection(signal, me),
    deadSection(signal));
}
