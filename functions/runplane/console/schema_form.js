// A form generated from a runnable's input_schema (JSON Schema): strings, numbers, integers, booleans and
// enums get their own controls, objects with properties nest, anything else (arrays, unions) is JSON text.
// Checking what the schema demands is left to the API, whose issues show next to the fields.

import { h } from "./dom.js";
import { jsonArea, readJson } from "./fields.js";

function typeOf(schema) {
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  return type ?? (schema.properties ? "object" : undefined);
}

function describe(schema, type) {
  const limits = [];
  if (schema.minimum !== undefined) limits.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) limits.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) limits.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) limits.push(`< ${schema.exclusiveMaximum}`);
  const characters = (n) => `${n} character${n === 1 ? "" : "s"}`;
  if (schema.minLength !== undefined) limits.push(`at least ${characters(schema.minLength)}`);
  if (schema.maxLength !== undefined) limits.push(`at most ${characters(schema.maxLength)}`);
  if (schema.format) limits.push(schema.format);
  const kind = type ? `${type}${type === "array" || !typeOf(schema) ? " as JSON" : ""}` : "any JSON value";
  return [schema.description, `${kind}${limits.length ? `, ${limits.join(", ")}` : ""}`].filter(Boolean).join(" — ");
}

const INPUT_TYPES = { date: "date", email: "email", uri: "url", time: "time" };

// { node, read(problems) }: read answers the value, undefined when the field was left empty.
function control(fields, schema, path, name, required) {
  const type = typeOf(schema);
  const label = schema.title ?? name;
  const hint = describe(schema, type);
  const choices = schema.enum ?? ("const" in schema ? [schema.const] : null);
  if (choices) {
    const select = h("select", {},
      required && schema.default !== undefined ? null : h("option", { value: "" }, "— not set —"),
      choices.map((choice, i) => h("option", { value: String(i), selected: schema.default !== undefined && JSON.stringify(schema.default) === JSON.stringify(choice) },
        typeof choice === "string" ? choice : JSON.stringify(choice))));
    return {
      node: fields.field(path, label, select, { hint: schema.description, required }),
      read: () => (select.value === "" ? undefined : choices[Number(select.value)]),
    };
  }
  if (type === "string") {
    const input = h("input", { type: INPUT_TYPES[schema.format] ?? "text", value: schema.default ?? "", maxlength: schema.maxLength, spellcheck: "false" });
    if (schema.format === "date-time") input.placeholder = "2026-01-31T12:00:00Z";
    return { node: fields.field(path, label, input, { hint, required }), read: () => (input.value === "" ? undefined : input.value) };
  }
  if (type === "number" || type === "integer") {
    const input = h("input", { type: "number", step: type === "integer" ? "1" : "any", inputmode: type === "integer" ? "numeric" : "decimal", value: schema.default ?? "", min: schema.minimum, max: schema.maximum });
    return {
      node: fields.field(path, label, input, { hint, required }),
      read: (problems) => {
        if (input.value === "") {
          if (input.validity.badInput) problems.push({ field: path, message: `must be ${type === "integer" ? "an integer" : "a number"}` });
          return undefined;
        }
        const value = Number(input.value);
        if (type === "integer" && !Number.isInteger(value)) problems.push({ field: path, message: "must be an integer" });
        return value;
      },
    };
  }
  if (type === "boolean") {
    if (required || schema.default !== undefined) {
      const box = h("input", { type: "checkbox", checked: schema.default === true });
      return { node: fields.field(path, label, box, { hint: schema.description, required }), read: () => box.checked };
    }
    const select = h("select", {}, h("option", { value: "" }, "— not set —"), h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
    return { node: fields.field(path, label, select, { hint, required }), read: () => (select.value === "" ? undefined : select.value === "true") };
  }
  if (type === "object" && schema.properties) {
    const parts = properties(fields, schema, path);
    return {
      node: fields.group(path, `${label}${required ? " *" : ""}`, parts.map((p) => p.node), schema.description),
      read: (problems) => {
        const value = collect(parts, problems);
        return Object.keys(value).length || required ? value : undefined;
      },
    };
  }
  const area = jsonArea(schema.default, { rows: 3, placeholder: type === "array" ? "[ ]" : type === "object" ? "{ }" : "JSON" });
  return {
    node: fields.field(path, label, area, { hint, required }),
    read: (problems) => readJson(area, path, problems, type === "array" || type === "object" ? type : undefined),
  };
}

function properties(fields, schema, path) {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {}).map(([name, property]) => ({
    name, ...control(fields, typeof property === "object" && property ? property : {}, `${path}.${name}`, name, required.has(name)),
  }));
}

function collect(parts, problems) {
  const value = {};
  for (const part of parts) {
    const read = part.read(problems);
    if (read !== undefined) value[part.name] = read;
  }
  return value;
}

// The inputs' controls; read(problems) answers the inputs object. A schema that is not an object with
// properties is JSON text.
export function inputsForm(fields, schema) {
  if (schema && typeOf(schema) === "object" && schema.properties) {
    const parts = properties(fields, schema, "inputs");
    return {
      node: fields.group("inputs", "Inputs", parts.map((p) => p.node), schema.description),
      read: (problems) => collect(parts, problems),
    };
  }
  const area = jsonArea({}, { rows: 6 });
  return {
    node: fields.field("inputs", "Inputs (JSON object)", area, { hint: schema ? describe(schema, typeOf(schema)) : "The runnable has no input_schema: any object." }),
    read: (problems) => readJson(area, "inputs", problems, "object") ?? {},
  };
}
