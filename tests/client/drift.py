"""Compares the client's models and endpoints with an OpenAPI document, as JSON Schemas.

An answer model must take everything the document says the server sends: each of its fields is in the
document's schema, with a type covering the document's (an enum with at least its values, a number for
an integer, null wherever null may come), every field the document requires is on the model, and the
model requires no field the document leaves optional. A request model must send only what the document
takes: each field is in the document's schema with a type the document's covers, and it requires every
field the document requires. A discriminated union (a runnable's `kind`) is met branch by branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from runplane_client import models
from runplane_client.endpoints import Endpoint

DOC_REF = "#/components/schemas/"
JSON = "application/json"
CLASSES: dict[str, type[BaseModel]] = {
    name: value
    for name, value in vars(models).items()
    if isinstance(value, type) and issubclass(value, BaseModel)
}


@dataclass(frozen=True)
class Side:
    """A schema and where its $refs lead (the document's components, or a model's $defs)."""

    schema: dict[str, Any]
    defs: dict[str, Any]
    prefix: str

    def resolved(self) -> tuple[str | None, dict[str, Any]]:
        schema, name = self.schema, None
        while "$ref" in schema:
            name = schema["$ref"].removeprefix(self.prefix)
            schema = self.defs[name]
        return name, schema

    def at(self, schema: dict[str, Any]) -> Side:
        return Side(schema, self.defs, self.prefix)

    def branches(self) -> list[tuple[str | None, str, Side]]:
        """(ref name, kind, schema) for each alternative: kind is a JSON type, `enum` or `any`."""
        name, schema = self.resolved()
        alternatives = schema.get("anyOf") or schema.get("oneOf")
        if alternatives and "discriminator" in schema:  # one object, met branch by branch
            return [(name, "object", self.at(schema))]
        if alternatives:
            return [branch for item in alternatives for branch in self.at(item).branches()]
        if "const" in schema or "enum" in schema:
            return [(name, "enum", self.at(schema))]
        types = schema.get("type") or ("object" if "properties" in schema else "any")
        return [(name, kind, self.at(schema)) for kind in (types if isinstance(types, list) else [types])]

    def values(self) -> set[Any]:
        schema = self.resolved()[1]
        return set(schema.get("enum", [])) | ({schema["const"]} if "const" in schema else set())


def client_side(model: type[BaseModel], mode: str) -> Side:
    schema = model.model_json_schema(mode=mode, ref_template="#/$defs/{model}")  # type: ignore[arg-type]
    defs = schema.pop("$defs", {})
    defs[model.__name__] = schema
    return Side({"$ref": f"#/$defs/{model.__name__}"}, defs, "#/$defs/")


def doc_side(document: dict[str, Any], schema: dict[str, Any]) -> Side:
    return Side(schema, document["components"]["schemas"], DOC_REF)


WIDER = {"integer": {"integer", "number"}}


def covers(wide: Side, narrow: Side, where: str, answer: bool) -> list[str]:
    """Problems unless every value `narrow` allows is one `wide` allows. `answer`: `wide` is the client's."""
    problems: list[str] = []
    for name, kind, branch in narrow.branches():
        attempts = [
            _branch(wide_name, wide_kind, wide_branch, name, kind, branch, where, answer)
            for wide_name, wide_kind, wide_branch in wide.branches()
        ]
        fitting = [found for found in attempts if found is not None]
        if not any(found == [] for found in fitting):
            problems += min(fitting, key=len) if fitting else [f"{where}: {kind} is not accepted"]
    return problems


def _branch(
    wide_name: str | None,
    wide_kind: str,
    wide: Side,
    name: str | None,
    kind: str,
    narrow: Side,
    where: str,
    answer: bool,
) -> list[str] | None:
    """Problems of `wide` taking `narrow` (None: not even the same kind of value)."""
    if wide_kind == "any":
        return []
    if kind == "enum":
        if wide_kind == "string":
            return []
        if wide_kind != "enum":
            return None
        missing = narrow.values() - wide.values()
        return [f"{where}: {sorted(missing)} not among {sorted(wide.values())}"] if missing else []
    if wide_kind not in WIDER.get(kind, {kind}):
        return None
    if kind == "array":
        items = (wide.resolved()[1].get("items", {}), narrow.resolved()[1].get("items", {}))
        return covers(wide.at(items[0]), narrow.at(items[1]), f"{where}[]", answer)
    if kind == "object":
        client, document = (wide, narrow) if answer else (narrow, wide)
        client_name, document_name = (wide_name, name) if answer else (name, wide_name)
        return compare_model(client, client_name, document, document_name, where, answer=answer)
    return []


def compare_model(
    client: Side,
    client_name: str | None,
    document: Side,
    document_name: str | None,
    where: str,
    *,
    answer: bool,
) -> list[str]:
    """Problems between a model of the client and the document's object schema (either may be free-form:
    then nothing is compared)."""
    mine, theirs = client.resolved()[1], document.resolved()[1]
    expected = getattr(CLASSES.get(client_name or ""), "schema_name", None)
    if answer and expected and document_name and expected != document_name:
        return [f"{where}: {client_name} mirrors {expected}, the document has {document_name}"]
    if "discriminator" in theirs:  # a request's union: each branch, and every kind the document has
        tag = theirs["discriminator"]["propertyName"]
        kinds: set[Any] = set()
        problems: list[str] = []
        for item in theirs.get("oneOf", []):
            branch = document.at(item)
            branch_schema = branch.resolved()[1]
            kinds |= branch.at(branch_schema["properties"][tag]).values()
            problems += _fields(client, mine, branch, branch_schema, where, answer, skip=tag)
        missing = kinds - client.at(mine["properties"][tag]).values()
        problems += [f"{where}.{tag}: the client has no {sorted(missing)}"] if missing else []
        return list(dict.fromkeys(problems))  # a field wrong in every branch is said once
    if "properties" not in mine or "properties" not in theirs:
        return []
    return _fields(client, mine, document, theirs, where, answer)


def _fields(
    client: Side, mine: dict, document: Side, theirs: dict, where: str, answer: bool, skip: str = ""
) -> list[str]:
    problems = [
        f"{where}.{field}: not in the document"
        for field in mine["properties"]
        if field not in theirs["properties"]
    ]
    for field, schema in mine["properties"].items():
        if field in theirs["properties"] and field != skip:
            ours, documented = client.at(schema), document.at(theirs["properties"][field])
            pair = (ours, documented) if answer else (documented, ours)
            problems += covers(*pair, f"{where}.{field}", answer)
    required, documented_required = set(mine.get("required", [])), set(theirs.get("required", []))
    if answer:
        problems += [
            f"{where}.{f}: required by the document, not on the model"
            for f in documented_required - set(mine["properties"])
        ]
        problems += [
            f"{where}.{f}: required here, optional in the document" for f in required - documented_required
        ]
    else:
        problems += [
            f"{where}.{f}: required by the document, optional here"
            for f in documented_required - required - {skip}
        ]
    return problems


def answer_problems(document: dict[str, Any], model: type[models.Answer]) -> list[str]:
    """The model against the document's component of the same name."""
    schemas = document["components"]["schemas"]
    if model.schema_name not in schemas:
        return [f"{model.__name__}: the document has no schema {model.schema_name}"]
    target = doc_side(document, {"$ref": DOC_REF + model.schema_name})
    return compare_model(
        client_side(model, "validation"),
        model.__name__,
        target,
        model.schema_name,
        model.__name__,
        answer=True,
    )


def endpoint_problems(document: dict[str, Any], endpoint: Endpoint) -> list[str]:
    where = f"{endpoint.method} {endpoint.path}"
    operation = document["paths"].get(endpoint.path, {}).get(endpoint.method.lower())
    if operation is None:
        return [f"{where}: not in the document"]
    parameters = {(p["in"], p["name"].lower()) for p in operation.get("parameters", [])}
    problems = [
        f"{where}: no query parameter {q}" for q in endpoint.query if ("query", q.lower()) not in parameters
    ]
    problems += [
        f"{where}: no header {h}" for h in endpoint.headers if ("header", h.lower()) not in parameters
    ]
    body = operation.get("requestBody", {})
    if endpoint.body is None:
        problems += [f"{where}: the document requires a body"] if body.get("required") else []
    elif JSON not in body.get("content", {}):
        problems.append(f"{where}: the document takes no JSON body")
    else:
        taken = doc_side(document, body["content"][JSON]["schema"])
        problems += covers(taken, client_side(endpoint.body, "serialization"), f"{where} body", answer=False)
    served = {
        ref.removeprefix(DOC_REF)
        for status, reply in operation["responses"].items()
        if status.startswith("2")
        for ref in _refs(reply.get("content", {}).get(JSON, {}).get("schema", {}))
    }
    if served and not endpoint.answers:
        problems.append(f"{where}: answers {sorted(served)}, the client reads none")
    for model in endpoint.answers:
        if model.schema_name not in served:
            problems.append(f"{where}: does not answer {model.schema_name} (it answers {sorted(served)})")
    return problems


def _refs(schema: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        return [schema["$ref"]]
    return [ref for item in schema.get("anyOf", []) + schema.get("oneOf", []) for ref in _refs(item)]
