"""A file sent with a run request: the API reads it from the body, the run keeps it as a resource."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


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
