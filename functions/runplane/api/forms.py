"""Request bodies: a JSON object, or an HTML form (urlencoded, or multipart with files), and form text typed
by an input schema. No I/O: the files are returned as bytes for the run to store."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from runplane.domain.documents import MAX_DEPTH, too_deep
from runplane.domain.errors import InvalidRequest, Issue, UnsupportedMediaType
from runplane.domain.files import FilePart

if TYPE_CHECKING:
    from email.message import Message

    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
FORMS = frozenset({URLENCODED, MULTIPART})
MAX_SCHEMA_NODES = 200  # nodes of an input schema looked at to type one form field
MAX_LITERAL = 100_000  # characters of a Python literal read for an object or array input
MAX_PARTS = 1000  # bounds the parsing work a body can ask for
MAX_FILES = 100  # a run holds at most 100 resources (RunRequestFields.resources); each file is one


@dataclass(frozen=True)
class RequestBody:
    values: dict[str, Any]  # JSON: the object as parsed; a form: its text values (str)
    files: list[FilePart]
    textual: bool  # True when values arrived as form text (type them by the input schema)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type, lower-cased and without parameters; JSON when there is none."""
    return (content_type or JSON).split(";")[0].strip().lower()


def read_body(event: BaseProxyEvent) -> RequestBody:
    """The body of `event`: JSON (no body or no Content-Type: `{}`), a urlencoded form or a multipart form
    (base64 or not). 415 for another media type; 400 for a malformed body or a field sent twice."""
    body, encoded = event.get("body") or "", bool(event.get("isBase64Encoded"))
    content_type = event.headers.get("content-type")
    kind = media_type(content_type)
    if not body:
        return RequestBody({}, [], textual=kind in FORMS)
    if kind == JSON:
        return RequestBody(json_object(body, encoded=encoded), [], textual=False)
    if kind not in FORMS:
        raise UnsupportedMediaType(content_type or "", (JSON, URLENCODED, MULTIPART))
    try:
        data = base64.b64decode(body, validate=True) if encoded else body.encode()
    except ValueError:  # binascii.Error, UnicodeEncodeError
        raise InvalidRequest("Request body is not valid base64 or UTF-8", "invalid_body") from None
    if kind == URLENCODED:
        return RequestBody(_urlencoded(data), [], textual=True)
    return _multipart(data, content_type or "")


# --- JSON ---


def json_object(body: str, *, encoded: bool) -> dict[str, Any]:
    """The JSON object `body` holds (base64 when `encoded`), refusing what Python's parser accepts but JSON,
    DynamoDB or pydantic do not: NaN, Infinity and numbers out of range, lone surrogates (no UTF-8 for
    them), nesting deeper than MAX_DEPTH, a key twice in an object (last-wins would hide a mistake); and a
    body that is not an object (null, an array, a scalar)."""
    try:
        document = _strict_json(base64.b64decode(body).decode() if encoded else body)
    except _DuplicateKey as twice:
        raise InvalidRequest(
            f"Request body has the key {twice.args[0]!r} twice in an object", "invalid_json"
        ) from None
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidRequest("Request body is not valid JSON", "invalid_json") from None
    if too_deep(document):
        raise InvalidRequest(f"Request body nests deeper than {MAX_DEPTH} levels", "invalid_json")
    if not isinstance(document, dict):
        raise InvalidRequest(f"Request body must be a JSON object, not {_kind(document)}", "invalid_body")
    return document


class _DuplicateKey(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    if math.isinf(number := float(text)):
        raise ValueError(f"{text} is out of range")
    return number


def _unique_keys(pairs: list[tuple[str, Any]], twice: Callable[[str], Exception] = _DuplicateKey) -> dict:
    """The pairs as a dict; `twice(key)` is raised for a key seen before (a JSON object's, a form's)."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise twice(key)
        document[key] = value
    return document


def _strict_json(text: str) -> Any:
    """`json.loads` with the refusals of `json_object` (depth aside); ValueError for any of them."""
    document = json.loads(
        text, parse_constant=_refuse_constant, parse_float=_finite, object_pairs_hook=_unique_keys
    )
    json.dumps(document, ensure_ascii=False).encode()  # a lone surrogate has no UTF-8
    return document


def _kind(document: Any) -> str:
    if document is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(document), "a number")


# --- forms ---


def _twice(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"Request body has the field {name!r} twice", "invalid_body", [Issue(f"body.{name}", "sent twice")]
    )


def _urlencoded(data: bytes) -> dict[str, str]:
    """`a=1&b=%C3%A9+x` (UTF-8, `+` for a space, blank values kept)."""
    try:
        pairs = parse_qsl(
            data.decode(),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_PARTS,
        )
    except ValueError:  # a field without `=`, an empty field, %-escapes not UTF-8, too many fields
        raise InvalidRequest("Request body is not a valid urlencoded form", "invalid_body") from None
    return _unique_keys(pairs, _twice)


def _multipart(data: bytes, content_type: str) -> RequestBody:
    """RFC 7578 form data: parts with a filename are files (a file input left empty, sent with an empty
    filename and no bytes, is nothing), the others UTF-8 text. A field may appear once, text or file."""
    from email.message import EmailMessage
    from email.policy import HTTP

    try:
        outer = EmailMessage(policy=HTTP)
        outer["Content-Type"] = content_type
        boundary = outer.get_param("boundary")
    except ValueError:
        boundary = None
    if not isinstance(boundary, str) or not boundary:
        raise InvalidRequest("multipart/form-data needs a boundary in its Content-Type", "invalid_body")
    values: dict[str, str] = {}
    files: list[FilePart] = []
    seen: set[str] = set()
    try:
        for count, part in enumerate(_parts(data, boundary.encode()), 1):
            if count > MAX_PARTS:
                raise InvalidRequest(f"A form may have at most {MAX_PARTS} fields", "invalid_body")
            name, filename, headers, content = _part(part)
            if name in seen:
                raise _twice(name)
            seen.add(name)
            text = _text(content) if filename is None else None
            if text is not None:
                values[name] = text
            elif filename or content:  # a part with bytes that are not text is a file, named or not
                files.append(
                    FilePart(name, filename or name, _content_type(headers.get("content-type")), content)
                )
                if len(files) > MAX_FILES:
                    raise InvalidRequest(f"A request may carry at most {MAX_FILES} files", "invalid_body")
    except _Malformed as problem:
        raise InvalidRequest(
            f"Request body is not valid multipart/form-data: {problem}", "invalid_body"
        ) from None
    return RequestBody(values, files, textual=True)


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]{0,63}/[A-Za-z0-9][\w!#$&^.+-]{0,63}")


def _content_type(declared: object) -> str:
    """A part's Content-Type when it names a media type in at most 255 printable ASCII characters (S3 keeps
    it with the object); else application/octet-stream."""
    kind = str(declared or "").strip()
    if (
        len(kind) <= 255
        and kind.isascii()
        and kind.isprintable()
        and _MEDIA_TYPE.fullmatch(kind.split(";")[0])
    ):
        return kind
    return "application/octet-stream"


def _text(content: bytes) -> str | None:
    try:
        return content.decode()
    except UnicodeDecodeError:
        return None


class _Malformed(ValueError):
    pass


def _parts(data: bytes, boundary: bytes) -> Iterator[bytes]:
    """The body parts between the delimiters (RFC 2046 5.1.1), sliced from the bytes as sent: a part's
    bytes end where CRLF and the next delimiter begin. The preamble and the epilogue are ignored."""
    delimiter = b"--" + boundary
    if data.startswith(delimiter):
        position = len(delimiter)
    elif (found := data.find(b"\r\n" + delimiter)) >= 0:
        position = found + 2 + len(delimiter)
    else:
        raise _Malformed("no boundary")
    while not data.startswith(b"--", position):  # the close delimiter
        line_end = data.find(b"\r\n", position)
        if line_end < 0 or data[position:line_end].strip(b" \t"):
            raise _Malformed("a boundary line is not followed by CRLF")
        start = line_end + 2
        end = data.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise _Malformed("the closing boundary is missing")
        yield data[start:end]
        position = end + 2 + len(delimiter)


# what browsers (and httpx) escape in a quoted name or filename, per the HTML standard
_ESCAPED = {"%22": '"', "%0D": "\r", "%0A": "\n", "%0d": "\r", "%0a": "\n"}


def _unescaped(text: str) -> str:
    for escape, character in _ESCAPED.items():
        text = text.replace(escape, character)
    return text


def _part(part: bytes) -> tuple[str, str | None, Message, bytes]:
    """(field name, filename or None, the part's headers, its bytes)."""
    from email.parser import BytesHeaderParser
    from email.policy import HTTP
    from email.utils import collapse_rfc2231_value

    head, blank, content = (
        (b"", b"\r\n", part[2:]) if part.startswith(b"\r\n") else part.partition(b"\r\n\r\n")
    )
    if not blank:
        raise _Malformed("a part's headers do not end")
    headers = BytesHeaderParser(policy=HTTP).parsebytes(head + b"\r\n\r\n")
    name = headers.get_param("name", header="content-disposition")
    if headers.get_content_disposition() != "form-data" or name is None:
        raise _Malformed("a part has no Content-Disposition: form-data with a name")
    filename = headers.get_filename()
    return (
        _unescaped(collapse_rfc2231_value(name)),
        None if filename is None else _unescaped(filename),
        headers,
        content,
    )


# --- typing form text ---

# how text is read for each JSON Schema type a property may declare, in the order they are tried
_EXPECTED = {
    "null": "null",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "object": "a JSON object",
    "array": "a JSON array",
}


def typed_inputs(
    values: dict[str, str], input_schema: dict | None, reserved: frozenset[str]
) -> dict[str, Any]:
    """Form text as the inputs the input schema declares: a property of type number, integer, boolean,
    object or array (or a list of those, null included) is parsed from its text; a string or undeclared
    property stays text, as does everything without a schema. `reserved` keys are left out."""
    properties = (input_schema or {}).get("properties")
    properties = properties if isinstance(properties, dict) else {}
    inputs: dict[str, Any] = {}
    issues: list[Issue] = []
    for name, text in values.items():
        if name in reserved:
            continue
        types = _declared_types(properties.get(name), input_schema or {})
        wanted = [t for t in _EXPECTED if t in types]
        if "string" in types or not wanted:
            inputs[name] = text
            continue
        for kind in wanted:
            try:
                inputs[name] = _typed(kind, text)
                break
            except ValueError:
                continue
        else:
            issues.append(Issue(f"body.{name}", "expected " + " or ".join(_EXPECTED[t] for t in wanted)))
    if issues:
        raise InvalidRequest("Invalid agent input data", "validation_error", issues)
    return inputs


def _declared_types(declared: Any, root: dict) -> set[str]:
    """The JSON Schema types a property may have: its `type`, and those of its `anyOf`/`oneOf`/`allOf`
    members and of local `$ref`s (`#/$defs/...`, as pydantic writes an optional or nested field). Each
    reference is followed once and at most MAX_SCHEMA_NODES nodes are looked at, whatever the schema."""
    found: set[str] = set()
    followed: set[str] = set()
    pending = [declared]
    for _ in range(MAX_SCHEMA_NODES):
        if not pending:
            break
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        kinds = node.get("type")
        found |= {kinds} if isinstance(kinds, str) else set(kinds) if isinstance(kinds, list) else set()
        for keyword in ("anyOf", "oneOf", "allOf"):
            members = node.get(keyword)
            pending += members if isinstance(members, list) else []
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and ref not in followed:
            followed.add(ref)
            target: Any = root
            for step in ref[2:].split("/"):
                target = target.get(step) if isinstance(target, dict) else None
            pending.append(target)
    return {kind for kind in found if isinstance(kind, str)}


def _python_literal(text: str) -> Any:
    """`text` as a Python literal, for what Roe AI's SDK sends for a dict or a list: its `str()`. Held to
    what JSON holds, as the JSON path is: no tuples, sets, bytes, NaN, lone surrogates, or a key twice."""
    import ast

    if len(text) > MAX_LITERAL:
        raise ValueError(text)
    try:
        tree = ast.parse(text, mode="eval")
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = [ast.literal_eval(key) for key in node.keys if key is not None]
                if len({str(key) for key in keys}) != len(keys):  # JSON keys are text: 1 and "1" collide
                    raise ValueError(text)
        value = ast.literal_eval(tree)
    except (SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError(text) from None
    return _strict_json(json.dumps(value, allow_nan=False))  # keys as text; ValueError or TypeError


def _typed(kind: str, text: str) -> Any:
    """`text` read as a value of JSON Schema type `kind`; ValueError when it is not one."""
    if kind == "null":
        if text in ("", "null"):
            return None
    elif kind == "boolean":
        if text in ("true", "True", "false", "False"):  # a Python bool sent as str(True)
            return text.lower() == "true"
    else:
        try:
            value = _strict_json(text)
        except RecursionError:
            raise ValueError(text) from None
        except _DuplicateKey:
            raise
        except ValueError:
            if kind not in ("object", "array"):
                raise
            try:
                value = _python_literal(text)
            except TypeError:
                raise ValueError(text) from None
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            return int(value)  # JSON Schema: a number with a zero fractional part is an integer
        expected = {"integer": int, "number": int | float, "object": dict, "array": list}[kind]
        if isinstance(value, expected) and not isinstance(value, bool) and not too_deep(value):
            return value
    raise ValueError(text)
