"""Files: one sent with a run request (`FilePart`), and the rules every resource's bytes and names keep: a
`data:` URI's syntax, a name and directory that stay inside the run's directory, a media type that tells
the truth about the bytes. No I/O."""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MAX_NAME = 255
MAX_SEGMENT_BYTES = 255  # of a file or directory name, as file systems count it
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
# What a more specific type filetype names is an instance of, where its magic numbers are the same.
_PARENT = {
    "image/apng": "image/png",
    **dict.fromkeys(
        (
            "application/epub+zip",
            "application/vnd.oasis.opendocument.presentation",
            "application/vnd.oasis.opendocument.spreadsheet",
            "application/vnd.oasis.opendocument.text",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/x-google-chrome-extension",
        ),
        "application/zip",
    ),
}
# Signatures long or distinctive enough that text does not begin with them by chance.
_STRONG = frozenset(
    {
        "image/png",
        "image/apng",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/heic",
        "application/pdf",
        "application/zip",
        *_PARENT,
        "application/gzip",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/x-xz",
        "application/x-bzip2",
        "application/zstd",
        "application/x-sqlite3",
        "application/wasm",
        "application/x-executable",
    }
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
    if len(name.encode()) > MAX_SEGMENT_BYTES:
        raise ValueError(f"must be at most {MAX_SEGMENT_BYTES} bytes as UTF-8 (a file name's limit)")
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
    if any(len(segment.encode()) > MAX_SEGMENT_BYTES for segment in segments):
        raise ValueError(f"each directory must be at most {MAX_SEGMENT_BYTES} bytes as UTF-8")
    return "/".join(segments)


def check_media_type(value: str) -> str:
    """`type/subtype`, lower-cased, with its `charset` when that is not UTF-8 (`text/csv;
    charset=iso-8859-1`): other parameters are dropped."""
    media, *params = (part.strip() for part in value.split(";"))
    media = media.lower()
    if not _MEDIA_TYPE.fullmatch(media):
        raise ValueError(f"{value!r} is not a media type (type/subtype)")
    charset = _charset(params)
    if charset is None:
        return media
    try:
        codecs.lookup(charset)
    except LookupError:
        raise ValueError(f"{charset!r} is not a character set this service knows") from None
    return f"{media}; charset={charset}"


def _charset(params: list[str]) -> str | None:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            return None if charset in ("utf-8", "utf8", "us-ascii", "ascii") else charset or None
    return None


def parse_data_uri(uri: str, max_bytes: int) -> tuple[str, bytes]:
    """The media type and bytes of `data:<type>;base64,<data>` (RFC 2397; a URI without `;base64` holds
    percent-encoded text). ValueError says what is wrong."""
    match = _DATA_URI.match(uri)
    if not match:
        raise ValueError("must be a data URI: data:<MIME type>;base64,<base64 data>")
    params = [p.strip() for p in match["params"].split(";") if p.strip()]
    media = check_media_type(";".join([match["type"] or "text/plain", *params]))
    params = [p.lower() for p in params]
    data = match["data"]
    if "base64" in params:
        if len(data) * 3 // 4 > max_bytes + 3:
            raise ValueError(f"holds more than {max_bytes} bytes")
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("its data is not valid base64") from None
    else:
        decoded = unquote_to_bytes(data)
    if len(decoded) > max_bytes:
        raise ValueError(f"holds {len(decoded)} bytes; at most {max_bytes} are allowed")
    return media, decoded


def type_problem(content_type: str, head: bytes, *, whole: bool) -> str | None:
    """Why `head` (a file's first SNIFF_BYTES, or all of it when `whole`) cannot be of `content_type`, or
    None. A type magic numbers identify must match them (or be what they are an instance of: a .docx is a
    zip archive); a textual type must decode in its charset (UTF-8 by default) and not start with a
    format's strong signature (two-byte ones such as `BM` or `MZ` begin ordinary text too); other types,
    and application/octet-stream, are taken as declared."""
    import filetype

    media, *params = content_type.split(";")
    declared = _ALIASES.get(media, media)
    guess = filetype.guess_mime(head) if head else None
    if _TEXTUAL.match(declared):
        if guess in _STRONG:
            return f"the bytes are {guess}, not {media}"
        charset = _charset(params) or "utf-8"
        return (
            None
            if _decodes(head, charset, whole=whole)
            else f"the bytes are not {charset.upper()} text, so not {media}"
        )
    if declared == OCTET_STREAM or guess == declared or _PARENT.get(guess or "") == declared:
        return None
    if guess == "application/zip" and _ZIP_CONTAINERS.match(declared):
        return None
    if declared in {t.mime for t in filetype.types}:
        return f"the bytes are {guess or 'not of a type recognised'}, not {media}"
    return None


def _decodes(head: bytes, charset: str, *, whole: bool) -> bool:
    """Text in `charset` throughout (a cut-off head may end inside a character)."""
    for cut in range(1 if whole else 4):
        try:
            head[: len(head) - cut].decode(charset)
            return True
        except UnicodeDecodeError:
            continue
    return False
