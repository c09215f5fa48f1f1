"""Files: one sent with a run request (`FilePart`), and the rules every resource's bytes and names keep: a
`data:` URI's syntax, a name and directory that stay inside the run's directory, a media type that tells
the truth about the bytes. No I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

MAX_NAME = 256
MAX_DIRECTORY = 1024
MAX_TAGS = 50
MAX_TAG = 128
MAX_METADATA_BYTES = 16 * 1024
SNIFF_BYTES = 8192  # what is read of a file to check its media type
OCTET_STREAM = "application/octet-stream"

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)
# Other names of the types magic numbers tell apart (filetype's names are the canonical ones).
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "audio/mp3": "audio/mpeg",
    "audio/wav": "audio/x-wav",
    "audio/wave": "audio/x-wav",
    "audio/flac": "audio/x-flac",
    "application/x-zip-compressed": "application/zip",
    "application/x-gzip": "application/gzip",
    "application/x-pdf": "application/pdf",
}
# Formats that are zip archives inside: their magic number says zip.
_ZIP_CONTAINERS = re.compile(
    r"^application/(vnd\.openxmlformats-|vnd\.oasis\.opendocument\.|epub\+zip|java-archive)"
)
_TEXTUAL = re.compile(
    r"^(text/|application/(json|xml|yaml|x-yaml|x-ndjson|javascript|ld\+json)$|.*\+(json|xml)$)"
)


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart body: the form field it came in, its filename and media type as sent."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def check_name(name: str) -> str:
    """A resource's file name: one path segment (no `/`, `\\`, NUL, `.` or `..`)."""
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"must be 1 to {MAX_NAME} characters")
    if any(c in name for c in "/\\\x00") or name in (".", ".."):
        raise ValueError("must be a file name: no '/', '\\\\' or NUL, and not '.' or '..'")
    return name


def check_directory(path: str) -> str:
    """A resource's directory, relative to the run's: `a/b` (`""` and `.` are the run's directory itself).
    Refused: absolute paths, `..`, backslashes and NUL. Empty and `.` segments are dropped."""
    if len(path) > MAX_DIRECTORY:
        raise ValueError(f"must be at most {MAX_DIRECTORY} characters")
    if "\x00" in path or "\\" in path:
        raise ValueError("must not contain NUL or '\\\\'")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValueError("must be a relative path (it is placed under the run's directory)")
    segments = [segment for segment in path.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise ValueError("must not contain '..' (it would leave the run's directory)")
    return "/".join(segments)


def check_media_type(value: str) -> str:
    """`type/subtype`, lower-cased and without parameters."""
    media = value.split(";")[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(media):
        raise ValueError(f"{value!r} is not a media type (type/subtype)")
    return media


def parse_data_uri(uri: str, max_bytes: int) -> tuple[str, bytes]:
    """The media type and bytes of `data:<type>;base64,<data>` (RFC 2397; a URI without `;base64` holds
    percent-encoded text). ValueError says what is wrong."""
    match = _DATA_URI.match(uri)
    if not match:
        raise ValueError("must be a data URI: data:<MIME type>;base64,<base64 data>")
    media = check_media_type(match["type"]) if match["type"] else "text/plain"
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    data = match["data"]
    if "base64" in params:
        if len(data) * 3 // 4 > max_bytes + 3:
            raise ValueError(f"holds more than {max_bytes} bytes")
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("its data is not valid base64") from None
    else:
        from urllib.parse import unquote_to_bytes

        decoded = unquote_to_bytes(data)
    if len(decoded) > max_bytes:
        raise ValueError(f"holds {len(decoded)} bytes; at most {max_bytes} are allowed")
    return media, decoded


def type_problem(content_type: str, head: bytes, *, whole: bool) -> str | None:
    """Why `head` (a file's first SNIFF_BYTES, or all of it when `whole`) cannot be of `content_type`, or
    None. A type magic numbers identify must match them; a textual type must be UTF-8; other types (and
    application/octet-stream) are taken as declared."""
    import filetype

    declared = _ALIASES.get(content_type, content_type)
    guess = filetype.guess_mime(head) if head else None
    if _TEXTUAL.match(declared):
        if guess is not None:
            return f"the bytes are {guess}, not {content_type}"
        return None if _is_utf8(head, whole=whole) else f"the bytes are not UTF-8 text, so not {content_type}"
    if declared == OCTET_STREAM or guess == declared:
        return None
    if guess == "application/zip" and _ZIP_CONTAINERS.match(declared):
        return None
    known = declared in {t.mime for t in filetype.types}
    if known:
        return f"the bytes are {guess or 'not of a type recognised'}, not {content_type}"
    return None


def _is_utf8(head: bytes, *, whole: bool) -> bool:
    """UTF-8 throughout (a cut-off head may end inside a character)."""
    for cut in range(1 if whole else 4):
        try:
            head[: len(head) - cut].decode()
            return True
        except UnicodeDecodeError:
            continue
    return False
