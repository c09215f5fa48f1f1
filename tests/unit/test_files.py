"""The rules a resource's bytes and names keep (domain/files.py): data URIs, names and directories that stay
inside the run's directory, media types, and bytes that are what their media type says."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from runplane.domain.files import (
    MAX_DIRECTORY,
    MAX_NAME,
    check_directory,
    check_media_type,
    check_name,
    parse_data_uri,
    type_problem,
)

PNG = (  # the signature and an IHDR chunk (1x1, RGB) with its CRC
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
)
APNG = PNG + b"\x00\x00\x00\x08acTL\x00\x00\x00\x01\x00\x00\x00\x00"  # an animated PNG: a PNG still
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
PDF = b"%PDF-1.7\r\n%\xe2\xe3\xcf\xd3\r\n"


def zipped(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return buffer.getvalue()


DOCX = zipped("[Content_Types].xml", "word/document.xml")  # what filetype recognises as a docx
ZIP = zipped("a.txt")
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- data URIs ---


@pytest.mark.parametrize(
    ("uri", "media", "data"),
    [
        (f"data:image/png;base64,{b64(PNG)}", "image/png", PNG),
        (f"data:Text/Plain;charset=UTF-8;BASE64,{b64('é'.encode())}", "text/plain", "é".encode()),
        (f"data:;base64,{b64(b'hi')}", "text/plain", b"hi"),
        ("data:,h%C3%A9llo%20world", "text/plain", "héllo world".encode()),
        ("data:text/csv,a%2Cb%0A1%2C2", "text/csv", b"a,b\n1,2"),
        ("data:application/json;charset=utf-8,%7B%7D", "application/json", b"{}"),
        ("data:,", "text/plain", b""),
        ("data:application/octet-stream;base64,", "application/octet-stream", b""),
    ],
    ids=[
        "base64",
        "params-and-case",
        "base64-no-type",
        "percent",
        "percent-typed",
        "percent-params",
        "empty",
        "empty-b64",
    ],
)
def test_a_data_uri_gives_its_media_type_and_bytes(uri: str, media: str, data: bytes) -> None:
    assert parse_data_uri(uri, 1024) == (media, data)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("data:text/plain;base64,@@@@", "base64"),
        ("data:text/plain;base64,aGk", "base64"),  # padding missing
        ("data:text/plain;base64,aG k=", "base64"),
        ("hello", "data URI"),
        ("data:text/plain;base64", "data URI"),  # no comma
        ("https://example.com/a.txt", "data URI"),
        ("data:text;base64,aGk=", "media type"),
        ("data:a b/c,x", "media type"),
    ],
)
def test_a_bad_data_uri_says_what_is_wrong(uri: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_data_uri(uri, 1024)


@pytest.mark.parametrize("size", [1025, 2000, 10_000])
def test_a_data_uri_holding_more_than_the_limit_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="1024"):
        parse_data_uri(f"data:application/octet-stream;base64,{b64(b'x' * size)}", 1024)
    with pytest.raises(ValueError, match="1024"):
        parse_data_uri("data:," + "x" * size, 1024)
    assert parse_data_uri(f"data:application/octet-stream;base64,{b64(b'x' * 1024)}", 1024)[1] == b"x" * 1024
    assert parse_data_uri("data:," + "%41" * 1024, 1024)[1] == b"A" * 1024  # counted decoded


# --- names and directories ---


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("", ""),
        (".", ""),
        ("a", "a"),
        ("a/b", "a/b"),
        ("a/./b/", "a/b"),
        ("./a//b/.", "a/b"),
        ("...", "..."),
        (".hidden/x", ".hidden/x"),
        ("a/b:c", "a/b:c"),
        ("é/日本", "é/日本"),
    ],
)
def test_a_directory_is_relative_and_normalised(path: str, normalised: str) -> None:
    assert check_directory(path) == normalised


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("..", r"\.\."),
        ("../x", r"\.\."),
        ("a/../../x", r"\.\."),
        ("a/..", r"\.\."),
        ("/abs", "relative"),
        ("/", "relative"),
        ("C:", "relative"),
        ("c:/windows", "relative"),
        ("C:foo", "relative"),
        ("a\x00b", "NUL"),
        ("a\\b", "NUL"),
        ("..\\x", "NUL"),
        ("a" * (MAX_DIRECTORY + 1), str(MAX_DIRECTORY)),
    ],
)
def test_a_directory_that_could_leave_the_runs_directory_is_refused(path: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_directory(path)


def test_a_directory_at_the_length_limits_is_kept_and_a_longer_segment_is_not() -> None:
    path = "/".join(["a" * 255] * 4)[:MAX_DIRECTORY]
    assert check_directory(path) == path
    with pytest.raises(ValueError, match="255 bytes"):
        check_directory("x/" + "é" * 128)  # 256 bytes as UTF-8
    with pytest.raises(ValueError, match="255 bytes"):
        check_name("é" * 128)


@pytest.mark.parametrize("name", ["a", "résumé final.pdf", ".env", "...", "a" * MAX_NAME, "a:b"])
def test_a_name_is_one_path_segment(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/a", "a\\b", "a\x00", "a" * (MAX_NAME + 1)])
def test_a_name_that_is_not_a_file_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        check_name(name)


# --- media types ---


@pytest.mark.parametrize(
    ("value", "media"),
    [
        ("text/plain", "text/plain"),
        ("Text/HTML; charset=UTF-8", "text/html"),
        (" application/json ", "application/json"),
        ("application/vnd.api+json", "application/vnd.api+json"),
        ("image/svg+xml", "image/svg+xml"),
    ],
)
def test_a_media_type_is_lower_cased_without_parameters(value: str, media: str) -> None:
    assert check_media_type(value) == media


@pytest.mark.parametrize("value", ["", "text", "text/", "/plain", "a b/c", "*/*", "text/plain/x", "é/x"])
def test_what_is_not_a_media_type_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="media type"):
        check_media_type(value)


# --- bytes against their media type ---


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("image/png", PNG),
        ("image/jpeg", JPEG),
        ("image/jpg", JPEG),  # an alias
        ("image/pjpeg", JPEG),
        ("application/pdf", PDF),
        ("application/x-pdf", PDF),
        ("application/zip", ZIP),
        ("application/x-zip-compressed", ZIP),
        (DOCX_TYPE, DOCX),
        (DOCX_TYPE, ZIP),  # a docx is a zip inside: its magic number says zip
        ("application/epub+zip", ZIP),
        ("application/octet-stream", PNG),
        ("application/octet-stream", b"\xff\xfe anything \x00"),
        ("application/octet-stream", b""),
        ("text/plain", "héllo\n".encode()),
        ("text/csv", b"a,b\n1,2\n"),
        ("application/json", b'{"a": 1}'),
        ("application/vnd.api+json", b'{"a": 1}'),
        ("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("text/plain", b""),
        ("application/x-custom", b"\x00\x01 whatever"),  # a type magic numbers do not know: as declared
        ("model/gltf-binary", PNG),
    ],
)
def test_bytes_that_can_be_their_media_type_are_fine(content_type: str, data: bytes) -> None:
    assert type_problem(content_type, data, whole=True) is None


@pytest.mark.parametrize(
    ("content_type", "data", "words"),
    [
        ("image/png", b"just some text", ["not of a type recognised", "image/png"]),
        ("image/png", JPEG, ["image/jpeg", "image/png"]),
        ("image/jpg", b"text", ["image/jpg"]),
        ("image/jpg", PNG, ["image/png", "image/jpg"]),
        ("application/pdf", PNG, ["image/png", "application/pdf"]),
        ("application/pdf", b"", ["application/pdf"]),
        (DOCX_TYPE, PDF, ["application/pdf"]),
        ("text/plain", PNG, ["image/png", "text/plain"]),
        ("text/plain", PDF, ["application/pdf", "text/plain"]),
        ("application/json", ZIP, ["application/zip"]),
        ("text/plain", "café".encode("latin-1"), ["UTF-8", "text/plain"]),
        ("text/csv", b"a,b\n\xff\xfe", ["UTF-8"]),
    ],
)
def test_bytes_that_are_not_their_media_type_are_a_problem_naming_both(
    content_type: str, data: bytes, words: list[str]
) -> None:
    problem = type_problem(content_type, data, whole=True)
    assert problem is not None
    assert all(word in problem for word in words), problem


@pytest.mark.parametrize(("char", "kept"), [("é", 1), ("€", 1), ("€", 2), ("𝄞", 1), ("𝄞", 2), ("𝄞", 3)])
def test_a_head_may_end_inside_a_character_but_a_whole_file_may_not(char: str, kept: int) -> None:
    head = b"a" * 100 + char.encode()[:kept]
    assert type_problem("text/plain", head, whole=False) is None
    assert type_problem("text/plain", head, whole=True) is not None


def test_a_head_with_bytes_that_are_not_utf8_before_its_end_is_a_problem() -> None:
    assert type_problem("text/plain", b"a\xffbcdef", whole=False) is not None
    assert type_problem("text/plain", b"a" * 10 + "é".encode() + b"\x80\x80\x80\x80", whole=False) is not None


@pytest.mark.parametrize(
    ("content_type", "data"),
    [("application/zip", DOCX), ("image/png", APNG)],
    ids=["docx-declared-zip", "apng-declared-png"],
)
def test_bytes_of_a_subtype_declared_as_the_type_they_are_an_instance_of_are_fine(
    content_type: str, data: bytes
) -> None:
    """A .docx (or .xlsx, .epub) is a zip archive and an animated PNG is a PNG: declaring the general type
    is the truth."""
    assert type_problem(content_type, data, whole=True) is None


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/csv", b"BMW,Audi\nVW,Seat\n"),  # BM: a bitmap's two-byte signature
        ("text/plain", b"MZ Corp quarterly notes\n"),  # MZ: a Windows executable's
        ("text/plain", b"ID3 tags explained\n"),  # an MP3's
        ("text/plain", b"OggS is a container\n"),
    ],
)
def test_text_that_begins_like_a_weak_signature_is_text(content_type: str, data: bytes) -> None:
    assert type_problem(content_type, data, whole=True) is None


def test_a_declared_charset_is_what_text_is_decoded_with_and_is_kept() -> None:
    latin = "café;crème\n".encode("latin-1")
    assert (
        check_media_type('Text/CSV; Charset="ISO-8859-1"; header=present') == "text/csv; charset=iso-8859-1"
    )
    assert check_media_type("text/csv; charset=UTF-8") == "text/csv"
    assert type_problem("text/csv; charset=iso-8859-1", latin, whole=True) is None
    assert type_problem("text/csv", latin, whole=True) is not None
    assert parse_data_uri(f"data:text/plain;charset=latin1;base64,{b64(latin)}", 100) == (
        "text/plain; charset=latin1",
        latin,
    )
    with pytest.raises(ValueError, match="character set"):
        check_media_type("text/plain; charset=klingon")
