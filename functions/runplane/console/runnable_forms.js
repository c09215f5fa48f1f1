// Registering or replacing a runnable (POST /v1/runnables, PUT /v1/runnable/{id}) and starting a run of
// one (POST /v1/runnable/{id}/runs) from a form generated from its input_schema.

import { api } from "./api.js";
import { h, errorBox, notify, set } from "./dom.js";
import { Fields, jsonArea, readJson } from "./fields.js";
import { inputsForm } from "./schema_form.js";
import { forgetNames } from "./runnables.js";

const KINDS = ["python", "http", "lambda", "bedrock"];
const TEMPLATES = {
  python: { function: "echo" },
  http: { url: "https://agent.example.com/run", mode: "sync" },
  lambda: { function_arn: "arn:aws:lambda:us-east-1:123456789012:function:my-agent" },
  bedrock: { model_id: "amazon.nova-micro-v1:0", prompt: "{{ input }}" },
};

function numberInput(value) {
  return h("input", { type: "number", step: "1", inputmode: "numeric", value: value ?? "" });
}

function readNumber(input, path, problems) {
  if (input.value === "") return input.validity.badInput ? (problems.push({ field: path, message: "must be an integer" }), undefined) : null;
  const value = Number(input.value);
  if (!Number.isInteger(value)) problems.push({ field: path, message: "must be an integer" });
  return value;
}

// The answer's issues by field; what no field takes, and the message, above the form.
function showError(error, fields, summary) {
  const left = fields.show(error.issues ?? []);
  set(summary, errorBox({ ...error, message: error.message, issues: left }));
  if (!error.issues?.length || left.length) summary.focus();
}

export async function editPage(main, context) {
  const { signal } = context;
  const id = context.match[1]?.toLowerCase();
  const item = id ? await api("GET", `/v1/runnable/${id}`, { signal }) : null;
  const fields = new Fields();
  const summary = h("div", { tabindex: -1, class: "summary" });
  const name = h("input", { type: "text", value: item?.name ?? "", maxlength: 200, spellcheck: "false" });
  const kind = h("select", {}, KINDS.map((k) => h("option", { value: k, selected: (item?.kind ?? "python") === k }, k)));
  const config = jsonArea(item?.config ?? TEMPLATES.python, { rows: 5 });
  let templated = !item;
  config.addEventListener("input", () => { templated = false; });
  kind.addEventListener("change", () => {
    if (templated) config.value = JSON.stringify(TEMPLATES[kind.value], null, 2);
  });
  const inputSchema = jsonArea(item?.input_schema, { rows: 8, placeholder: '{"type": "object", "properties": {…}}' });
  const outputSchema = jsonArea(item?.output_schema, { rows: 4, placeholder: "none" });
  const timeout = numberInput(item?.timeout_seconds);
  const concurrency = numberInput(item?.max_concurrency);
  const telemetry = h("select", {}, ["default", "disable", "force"].map((t) => h("option", { value: t, selected: (item?.telemetry_strategy ?? "default") === t }, t)));
  const tags = h("input", { type: "text", value: (item?.tags ?? []).join(", "), spellcheck: "false" });
  const retry = h("input", { type: "checkbox", checked: item ? item.retry_on_worker_lost : true });
  const submit = h("button", { type: "submit", class: "primary" }, item ? "Save" : "Register");

  const form = h("form", { class: "form", method: "post", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    fields.clear();
    summary.replaceChildren();
    const problems = [];
    const body = {
      name: name.value.trim(),
      kind: kind.value,
      config: readJson(config, "config", problems, "object") ?? {},
      input_schema: readJson(inputSchema, "input_schema", problems, "object") ?? null,
      output_schema: readJson(outputSchema, "output_schema", problems, "object") ?? null,
      timeout_seconds: readNumber(timeout, "timeout_seconds", problems),
      max_concurrency: readNumber(concurrency, "max_concurrency", problems),
      telemetry_strategy: telemetry.value,
      tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean),
      retry_on_worker_lost: retry.checked,
    };
    if (problems.length) {
      showError({ message: "Fix the fields marked below", code: "", issues: problems }, fields, summary);
      return;
    }
    submit.disabled = true;
    try {
      const saved = item
        ? await api("PUT", `/v1/runnable/${id}`, { body, signal })
        : await api("POST", "/v1/runnables", { body, signal });
      forgetNames();
      notify(item ? `Saved ${saved.name}` : `Registered ${saved.name}`);
      context.go(`/runnable/${saved.id}`);
    } catch (error) {
      if (error.name !== "AbortError") showError(error, fields, summary);
    } finally {
      submit.disabled = false;
    }
  } },
  summary,
  fields.field("name", "Name", name, { required: true, hint: "Unique in the account" }),
  fields.field("kind", "Kind", kind, { required: true }),
  fields.field("config", "Config (JSON)", config, { required: true, hint: "What the kind needs: python {function}, http {url, …}, lambda {function_arn}, bedrock {model_id, prompt}" }),
  fields.field("input_schema", "Input schema (JSON Schema)", inputSchema, { hint: "Runs' inputs must match it; the run form is made from it" }),
  fields.field("output_schema", "Output schema (JSON Schema)", outputSchema),
  h("div", { class: "row" },
    fields.field("timeout_seconds", "Timeout (seconds)", timeout, { hint: "Empty: none of its own (the deployment's maximum applies)" }),
    fields.field("max_concurrency", "Max concurrency", concurrency, { hint: "Empty: the account's limit only" }),
    fields.field("telemetry_strategy", "Telemetry", telemetry)),
  fields.field("tags", "Tags", tags, { hint: "Comma-separated" }),
  fields.field("retry_on_worker_lost", "Run again when its worker is lost", retry),
  h("div", { class: "actions" }, submit, h("a", { class: "button", href: item ? `#/runnable/${id}` : "#/runnables" }, "Back")));
  main.append(h("h1", {}, item ? `Edit ${item.name}` : "New runnable"), form);
  name.focus();
}

export async function startPage(main, context) {
  const { signal } = context;
  const id = context.match[1].toLowerCase();
  const item = await api("GET", `/v1/runnable/${id}`, { signal });
  const fields = new Fields();
  const summary = h("div", { tabindex: -1, class: "summary" });
  const inputs = inputsForm(fields, item.input_schema);
  const callback = h("input", { type: "url", spellcheck: "false", placeholder: "https://hooks.example.com/runplane" });
  const timeout = numberInput();
  const metadata = jsonArea(undefined, { rows: 3, placeholder: "{ }" });
  const submit = h("button", { type: "submit", class: "primary", id: "start" }, "Start run");

  const form = h("form", { class: "form", method: "post", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    fields.clear();
    summary.replaceChildren();
    const problems = [];
    const body = { inputs: inputs.read(problems) };
    const seconds = readNumber(timeout, "timeout_seconds", problems);
    if (seconds !== null && seconds !== undefined) body.timeout_seconds = seconds;
    const meta = readJson(metadata, "metadata", problems, "object");
    if (meta !== undefined) body.metadata = meta;
    if (callback.value.trim()) body.callback_url = callback.value.trim();
    if (problems.length) {
      showError({ message: "Fix the fields marked below", code: "", issues: problems }, fields, summary);
      return;
    }
    submit.disabled = true;
    try {
      const started = await api("POST", `/v1/runnable/${id}/runs`, { body, query: { mode: "async" }, signal });
      notify("Run started");
      context.go(`/run/${started.id}`);
    } catch (error) {
      if (error.name !== "AbortError") showError(error, fields, summary);
    } finally {
      submit.disabled = false;
    }
  } },
  summary,
  inputs.node,
  h("details", {}, h("summary", {}, "Options"),
    fields.field("callback_url", "Callback URL", callback, { hint: "Called (signed) when the run ends" }),
    fields.field("timeout_seconds", "Timeout (seconds)", timeout, { hint: "Empty: the runnable's" }),
    fields.field("metadata", "Metadata (JSON object)", metadata)),
  h("div", { class: "actions" }, submit, h("a", { class: "button", href: `#/runnable/${id}` }, "Back")));
  main.append(h("h1", {}, "Start a run of ", item.name), form);
  form.querySelector("input, select, textarea")?.focus();
}
