"""Reading request bodies (JSON, urlencoded and multipart forms as httpx sends them) and typing form text."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from runplane.api.forms import FilePart, RequestBody, read_body, typed_inputs
from runplane.domain.errors import InvalidRequest, Issue, UnsupportedMediaType

BINARY = bytes(range(256)) + b"\r\n--\r\n\r"  # every byte, and what looks like a line end at the very end
RESERVED = frozenset({"metadata", "organization_id"})


def event(
    body: bytes | str | None, content_type: str | None, *, encoded: bool = False
) -> APIGatewayProxyEvent:
    data = body.encode() if isinstance(body, str) else body
    text = base64.b64encode(data).decode() if encoded and data is not None else (data or b"").decode()
    headers = {"Content-Type": content_type} if content_type else {}
    return APIGatewayProxyEvent(
        {"body": text if data else None, "isBase64Encoded": encoded, "headers": headers}
    )


def sent(data: dict[str, Any] | None = None, files: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) as httpx sends them."""
    request = httpx.Request("POST", "https://api.example.com/v1/agents/run/x/", data=data, files=files)
    return request.read(), request.headers.get("content-type", "")


def read_sent(data: dict[str, Any] | None = None, files: dict[str, Any] | None = None) -> RequestBody:
    body, content_type = sent(data, files)
    return read_body(
        event(body, content_type, encoded=content_type.startswith("multipart/"))
    )  # as API Gateway


def refusal(body: bytes | str, content_type: str | None, **kw: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        read_body(event(body, content_type, **kw))
    return raised.value


# --- JSON and no body ---


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", None])
def test_json_is_the_object_as_parsed(content_type: str | None) -> None:
    body = read_body(event('{"n": 1, "t": "é", "o": {"a": [true]}}', content_type))
    assert body == RequestBody({"n": 1, "t": "é", "o": {"a": [True]}}, [], textual=False)


def test_json_may_be_base64() -> None:
    assert read_body(event('{"a": 1}', "application/json", encoded=True)).values == {"a": 1}


@pytest.mark.parametrize("content_type", ["application/json", None, "multipart/form-data", "text/plain"])
def test_no_body_is_an_empty_object(content_type: str | None) -> None:
    body = read_body(event(None, content_type))
    assert (body.values, body.files) == ({}, [])


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        ('{"a": 1, "a": 2}', "invalid_json", "'a' twice"),
        ('{"a": NaN}', "invalid_json", "not valid JSON"),
        ('{"a": 1e400}', "invalid_json", "not valid JSON"),
        ('{"a": "\\ud800"}', "invalid_json", "not valid JSON"),
        ("[" * 100_000, "invalid_json", "not valid JSON"),  # past the parser's recursion limit
        ('{"a": ' + "[" * 64 + "]" * 64 + "}", "invalid_json", "deeper than 64"),
        ("[1]", "invalid_body", "not an array"),
        ("{", "invalid_json", "not valid JSON"),
    ],
)
def test_json_keeps_every_check_of_the_gate(raw: str, code: str, says: str) -> None:
    problem = refusal(raw, "application/json")
    assert problem.code == code
    assert says in problem.message


# --- urlencoded ---


def test_urlencoded_is_utf8_text_with_plus_and_escapes_and_blank_values() -> None:
    body = read_sent({"topic": "naïve café & co", "n": str(5), "flag": str(True), "blank": ""})  # as the SDK
    assert body == RequestBody({"topic": "naïve café & co", "n": "5", "flag": "True", "blank": ""}, [], True)
    raw = "a=1+2&b=%C3%A9%2B&c="
    assert read_body(event(raw, "application/x-www-form-urlencoded; charset=utf-8")).values == {
        "a": "1 2",
        "b": "é+",
        "c": "",
    }


@pytest.mark.parametrize("raw", ["a=1&a=2", "a=1&b=2&a="])
def test_a_urlencoded_field_twice_is_refused_by_name(raw: str) -> None:
    problem = refusal(raw, "application/x-www-form-urlencoded")
    assert (problem.code, problem.issues) == ("invalid_body", [Issue("body.a", "sent twice")])
    assert "'a' twice" in problem.message


@pytest.mark.parametrize("raw", ["a", "a=1&&b=2", "a=%FF", "a=%ED%A0%80"])
def test_a_malformed_urlencoded_body_is_refused(raw: str) -> None:
    assert refusal(raw, "application/x-www-form-urlencoded").code == "invalid_body"


# --- multipart ---


def test_multipart_text_fields_and_files_as_httpx_sends_them() -> None:
    body = read_sent(
        {"topic": "héllo", 'naïve "quoted" name': "x", "empty": "", "lines": "a\r\nb\n"},
        {
            "doc": ('ré"sumé\\.pdf', BINARY, "application/pdf"),
            "note": ("note.txt", b"plain text, no final newline", "text/plain"),
            "mail": ("message.eml", b"From: a@example.com\r\n\r\nbody\r\n", None),  # httpx: message/rfc822
        },
    )
    assert body.textual is True
    assert body.values == {"topic": "héllo", 'naïve "quoted" name': "x", "empty": "", "lines": "a\r\nb\n"}
    assert body.files == [
        FilePart("doc", 'ré"sumé\\.pdf', "application/pdf", BINARY),
        FilePart("note", "note.txt", "text/plain", b"plain text, no final newline"),
        FilePart("mail", "message.eml", "message/rfc822", b"From: a@example.com\r\n\r\nbody\r\n"),
    ]


def test_multipart_need_not_be_base64_and_may_have_a_preamble_and_quoted_boundary() -> None:
    raw = (
        b"ignored preamble\r\n--b:x y\r\n"
        b'Content-Disposition: form-data; name="t"\r\n\r\none\r\n'
        b'--b:x y\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n\x00\r\n'
        b"--b:x y--\r\nignored epilogue"
    )
    body = read_body(event(raw.decode("latin-1").encode(), 'multipart/form-data; boundary="b:x y"'))
    assert body.values == {"t": "one"}
    assert body.files == [FilePart("f", "f.bin", "application/octet-stream", b"\x00")]


def test_an_empty_file_input_is_nothing_but_an_empty_named_file_is_a_file() -> None:
    boundary = "XyZ"
    parts = [
        'Content-Disposition: form-data; name="unchosen"; filename=""\r\n'
        "Content-Type: application/octet-stream\r\n\r\n",
        'Content-Disposition: form-data; name="empty"; filename="empty.txt"\r\n\r\n',
    ]
    raw = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"
    body = read_body(event(raw, f"multipart/form-data; boundary={boundary}", encoded=True))
    assert (body.values, body.files) == (
        {},
        [FilePart("empty", "empty.txt", "application/octet-stream", b"")],
    )


@pytest.mark.parametrize(
    ("data", "files"),
    [
        ({"a": "1"}, {"a": ("a.txt", b"x", "text/plain")}),  # a text field and a file of one name
        (None, {"f": ("1.txt", b"1", "text/plain"), "g": ("2.txt", b"2", "text/plain")}),
    ],
)
def test_a_multipart_field_twice_is_refused_by_name(data: dict | None, files: dict) -> None:
    body, content_type = sent(data, files)
    if data is None:  # the same file field twice
        body = body.replace(b'name="g"', b'name="f"')
    name = next(iter(files))
    problem = refusal(body, content_type, encoded=True)
    assert (problem.code, problem.issues) == ("invalid_body", [Issue(f"body.{name}", "sent twice")])


@pytest.mark.parametrize(
    "damage",
    [
        lambda body, b: body[: -len(b"--" + b + b"--\r\n")],  # no closing boundary
        lambda body, b: body[:-40],  # cut off inside the last part
        lambda body, b: body.replace(b"--" + b, b"--other"),  # boundary not the Content-Type's
        lambda body, b: body.replace(
            b"Content-Disposition: form-data; ", b"Content-Disposition: attachment; "
        ),
        lambda body, b: body.replace(b'; name="t"', b""),  # a part without a name
        lambda body, b: body.replace(b"\r\n\r\n", b"\r\n", 1),  # a part's headers never end
        lambda body, b: body.replace(b"--" + b + b"\r\n", b"--" + b + b"junk\r\n", 1),
    ],
)
def test_a_malformed_multipart_body_is_refused(damage: Any) -> None:
    body, content_type = sent({"t": "héllo"}, {"f": ("f.bin", BINARY, "application/octet-stream")})
    boundary = content_type.split("boundary=")[1].encode()
    problem = refusal(damage(body, boundary), content_type, encoded=True)
    assert problem.code == "invalid_body"


def test_a_part_without_a_filename_whose_bytes_are_not_text_is_a_file() -> None:
    body, content_type = sent({"t": "héllo"}, {"f": ("f.txt", b"x", "text/plain")})
    read = read_body(event(body.replace("héllo".encode(), b"h\xe9llo"), content_type, encoded=True))
    assert read.values == {}
    assert read.files == [
        FilePart("t", "t", "application/octet-stream", b"h\xe9llo"),
        FilePart("f", "f.txt", "text/plain", b"x"),
    ]


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=x"],
)
def test_multipart_without_a_boundary_is_refused(content_type: str) -> None:
    body, _ = sent({"t": "x"}, {"f": ("f.bin", b"x", "text/plain")})
    problem = refusal(body, content_type, encoded=True)
    assert (problem.code, "boundary" in problem.message) == ("invalid_body", True)


def test_a_body_that_is_not_base64_is_refused() -> None:
    broken = APIGatewayProxyEvent(
        {
            "body": "%%%",
            "isBase64Encoded": True,
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        }
    )
    with pytest.raises(InvalidRequest):
        read_body(broken)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/mixed; boundary=b", ""])
def test_another_media_type_is_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        read_body(event("a=1", content_type or "; charset=utf-8"))


# --- typed_inputs ---

SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "n": {"type": "number"},
        "i": {"type": "integer"},
        "flag": {"type": "boolean"},
        "obj": {"type": "object"},
        "list": {"type": "array"},
        "maybe": {"type": ["integer", "null"]},
        "either": {"type": ["string", "integer"]},
        "untyped": {"description": "no type"},
    },
}


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("text", "5", "5"),
        ("n", "2.5", 2.5),
        ("n", "-3", -3),
        ("n", "1e3", 1000.0),
        ("i", "7", 7),
        ("i", "5.0", 5),
        ("flag", "true", True),
        ("flag", "False", False),  # str(False), as the SDK sends a Python bool
        ("obj", '{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}),
        ("list", "[1, 2]", [1, 2]),
        ("maybe", "3", 3),
        ("maybe", "null", None),
        ("maybe", "", None),
        ("either", "3", "3"),
        ("untyped", "[1]", "[1]"),
        ("undeclared", "true", "true"),
    ],
)
def test_form_text_is_typed_by_the_input_schema(name: str, text: str, value: Any) -> None:
    typed = typed_inputs({name: text}, SCHEMA, RESERVED)
    assert typed == {name: value}
    assert type(typed[name]) is type(value)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("n", "abc", "expected a number"),
        ("n", "NaN", "expected a number"),
        ("n", "1e400", "expected a number"),
        ("n", "true", "expected a number"),
        ("i", "2.5", "expected an integer"),
        ("i", '"7"', "expected an integer"),
        ("flag", "yes", "expected true or false"),
        ("flag", "1", "expected true or false"),
        ("obj", "[1]", "expected a JSON object"),
        ("obj", "{a: 1}", "expected a JSON object"),
        ("obj", '{"a": 1, "a": 2}', "expected a JSON object"),
        ("list", "[" * 65 + "]" * 65, "expected a JSON array"),
        ("maybe", "x", "expected null or an integer"),
    ],
)
def test_text_that_does_not_parse_is_refused_naming_the_field(name: str, text: str, expected: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        typed_inputs({name: text, "text": "fine"}, SCHEMA, RESERVED)
    problem = raised.value
    assert (problem.message, problem.code) == ("Invalid agent input data", "validation_error")
    assert problem.issues == [Issue(f"body.{name}", expected)]


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidRequest) as raised:
        typed_inputs({"n": "x", "i": "y", "text": "z"}, SCHEMA, RESERVED)
    assert [issue.field for issue in raised.value.issues] == ["body.n", "body.i"]


def test_without_a_schema_everything_stays_text_and_reserved_keys_are_left_out() -> None:
    values = {"n": "5", "flag": "true", "metadata": json.dumps({"k": 1}), "organization_id": "acme"}
    assert typed_inputs(values, None, RESERVED) == {"n": "5", "flag": "true"}
    assert typed_inputs(values, {"type": "object"}, RESERVED) == {"n": "5", "flag": "true"}
    assert typed_inputs({"n": "5", "metadata": "{}"}, SCHEMA, RESERVED) == {"n": 5}


def test_at_most_100_files() -> None:
    files = [(f"f{n}", (f"{n}.txt", b"x", "text/plain")) for n in range(101)]
    request = httpx.Request("POST", "https://x/", files=files)
    problem = refusal(request.read(), request.headers["content-type"], encoded=True)
    assert (problem.code, "at most 100 files" in problem.message) == ("invalid_body", True)
    assert len(read_sent(None, dict(files[:100])).files) == 100


def test_types_are_found_through_any_of_and_refs_as_pydantic_writes_them() -> None:
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int

    class Inputs(BaseModel):
        n: int | None = None
        at: Point | None = None
        name: str | None = None

    schema = Inputs.model_json_schema()
    assert typed_inputs({"n": "3", "at": '{"x": 1}', "name": "3"}, schema, frozenset()) == {
        "n": 3,
        "at": {"x": 1},
        "name": "3",
    }
    with pytest.raises(InvalidRequest) as refused:
        typed_inputs({"n": "three"}, schema, frozenset())
    assert refused.value.issues == [Issue("body.n", "expected null or an integer")]


def test_an_object_or_array_may_come_as_pythons_str_of_it_as_roes_sdk_sends_it() -> None:
    schema = {"properties": {"opts": {"type": "object"}, "tags": {"type": "array"}}}
    sent = {"opts": str({"a": 1, "on": True, "off": None, 2: "b"}), "tags": str(["a", ("b",)])}
    assert typed_inputs(sent, schema, frozenset()) == {
        "opts": {"a": 1, "on": True, "off": None, "2": "b"},
        "tags": ["a", ["b"]],
    }
    for bad in ({"opts": "{1, 2}"}, {"tags": "b'x'"}, {"opts": "__import__('os')"}, {"tags": "[" * 200}):
        with pytest.raises(InvalidRequest):
            typed_inputs(bad, schema, frozenset())


def test_a_schema_of_many_references_is_looked_at_a_bounded_number_of_times() -> None:
    import time

    defs = {"A0": {"type": "integer"}}
    for level in range(1, 6):  # each level refers to the one below 60 times: 60**5 paths if walked naively
        defs[f"A{level}"] = {"anyOf": [{"type": "string"}] + [{"$ref": f"#/$defs/A{level - 1}"}] * 60}
    schema = {"$defs": defs, "properties": {"x": {"$ref": "#/$defs/A5"}}}
    began = time.monotonic()
    assert typed_inputs({"x": "1"}, schema, frozenset()) == {"x": "1"}  # a string is among its types
    assert time.monotonic() - began < 1


@pytest.mark.parametrize(
    "text", ["{'a': 1, 'a': 2}", "{1: 'x', '1': 'y'}", "{'a': '\\ud800'}", "['\\udfff']"]
)
def test_a_python_literal_is_held_to_what_json_holds(text: str) -> None:
    schema = {"properties": {"v": {"type": ["object", "array"]}}}
    with pytest.raises(InvalidRequest):
        typed_inputs({"v": text}, schema, frozenset())
