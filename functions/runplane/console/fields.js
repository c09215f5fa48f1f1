// Form fields that show errors next to themselves: the API's issues (`field` is a path such as
// body.inputs.count) go to the field of that path, or of its nearest ancestor; the rest to the summary.

import { h } from "./dom.js";

let counter = 0;
const REQUIRED = /^'(.+)' is a required property$/;

export class Fields {
  constructor() {
    this.byPath = new Map();
  }

  // A labelled control for `path` (the body's field, "name" or "inputs.count"); `control` has an id.
  field(path, label, control, { hint, required } = {}) {
    const id = control.id || (control.id = `field-${++counter}`);
    const hintNode = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
    const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    control.setAttribute("aria-describedby", [hintNode ? `${id}-hint` : "", `${id}-error`].join(" ").trim());
    if (required) control.setAttribute("aria-required", "true");
    const checkbox = control.type === "checkbox";
    const labelNode = h("label", { for: id }, label, required ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null);
    const node = h("div", { class: checkbox ? "field check" : "field", "data-path": path },
      checkbox ? [control, " ", labelNode] : [labelNode, control], hintNode, error);
    this.byPath.set(path, { control, error });
    return node;
  }

  // A group (an object's properties) whose own errors show under its legend.
  group(path, legend, children, hint) {
    const error = h("p", { class: "field-error", hidden: true });
    const node = h("fieldset", { "data-path": path }, h("legend", {}, legend), hint ? h("p", { class: "hint" }, hint) : null, error, children);
    this.byPath.set(path, { control: node, error });
    return node;
  }

  clear() {
    for (const { control, error } of this.byPath.values()) {
      error.hidden = true;
      error.textContent = "";
      control.removeAttribute("aria-invalid");
    }
  }

  // Shows each issue [{field, message}] by its field; answers those no field took.
  show(issues) {
    const left = [];
    let first = null;
    for (const issue of issues) {
      const target = this.find(String(issue.field ?? "").replace(/^body\.?/, ""), String(issue.message ?? ""));
      if (!target) {
        left.push(issue);
        continue;
      }
      const { entry, path, exact } = target;
      entry.error.hidden = false;
      entry.control.closest("details")?.setAttribute("open", "");
      entry.error.append(h("span", {}, exact ? "" : `${path}: `, issue.message));
      if (entry.control.tagName !== "FIELDSET") entry.control.setAttribute("aria-invalid", "true");
      first ??= entry.control;
    }
    if (first && first.tagName !== "FIELDSET") first.focus();
    return left;
  }

  find(path, message) {
    const missing = REQUIRED.exec(message)?.[1];
    if (missing && this.byPath.has(path ? `${path}.${missing}` : missing)) {
      return { entry: this.byPath.get(path ? `${path}.${missing}` : missing), path, exact: true };
    }
    for (let at = path; at; at = at.includes(".") ? at.slice(0, at.lastIndexOf(".")) : "") {
      if (this.byPath.has(at)) return { entry: this.byPath.get(at), path, exact: at === path };
    }
    return null;
  }
}

// A JSON text area: read() is the parsed value, undefined when empty; a parse error is an issue.
export function jsonArea(value, { rows = 6, placeholder } = {}) {
  return h("textarea", {
    class: "code", rows, spellcheck: "false", placeholder,
    value: value === undefined || value === null ? "" : JSON.stringify(value, null, 2),
  });
}

export function readJson(area, path, problems, expect) {
  const text = area.value.trim();
  if (!text) return undefined;
  try {
    const value = JSON.parse(text);
    if (expect === "object" && (typeof value !== "object" || value === null || Array.isArray(value))) {
      problems.push({ field: path, message: "must be a JSON object" });
    } else if (expect === "array" && !Array.isArray(value)) {
      problems.push({ field: path, message: "must be a JSON array" });
    }
    return value;
  } catch (error) {
    problems.push({ field: path, message: `is not valid JSON (${error.message})` });
    return undefined;
  }
}
