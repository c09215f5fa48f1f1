"""What a run's code sees of a resource: `ctx.resources[name]`, its bytes read from S3 when first asked for."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from runplane.adapters import aws
from runplane.adapters.blobs import Blobs

_blobs: dict[int, Blobs] = {}
_lock = threading.Lock()


def _blobs_here(bucket: str) -> Blobs:
    """The bucket through an S3 client of this process: a python runnable runs in a forked child, which
    must not share the worker's connections. The client reuses the session's parsed S3 model, which the
    child inherits (`load_model`; reading it again costs about 80 ms a run)."""
    with _lock:
        if os.getpid() not in _blobs:
            _blobs[os.getpid()] = Blobs(bucket, aws.own_client("s3"))
        return _blobs[os.getpid()]


def run_directory(run_id: str, attempt: int) -> Path:
    """Where an attempt of a run keeps its downloaded resources (an attempt's own: one taken over may
    still be ending on the same machine)."""
    return Path(tempfile.gettempdir()) / f"runplane-{run_id}-{attempt}"


def remove_run_files(run_id: str, attempt: int) -> None:
    """Delete what the attempt downloaded: a warm worker's temporary storage is shared by the runs it
    executes."""
    shutil.rmtree(run_directory(run_id, attempt), ignore_errors=True)


def load_model() -> None:
    """Parse S3's model into the worker's boto3 session once, before runs' processes are forked."""
    aws.client("s3")


class ResourceFile:
    """A resource of the run: `name`, `directory_path`, `content_type`, `size`, `sha256`, `metadata`,
    `tags`, `id`; its bytes by `read_bytes()`, `text()`, `open()`, or a local `path` (downloaded on first
    use into the worker's temporary storage, under `directory_path`); `url`, a presigned GET to pass on."""

    def __init__(self, directory: Path, bucket: str, seen: dict[str, Any], sign: Callable[[], str]):
        self.id: str = seen["id"]
        self.name: str = seen["name"]
        self.directory_path: str = seen["directory_path"]
        self.content_type: str = seen["content_type"]
        self.size: int | None = seen.get("size")
        self.sha256: str | None = seen.get("sha256")
        self.metadata: dict[str, Any] = seen.get("metadata") or {}
        self.tags: list[str] = seen.get("tags") or []
        self._key: str = seen["key"]
        self._bucket = bucket
        self._directory = directory
        self._downloading = threading.Lock()
        self._sign = sign
        self._path: Path | None = None

    def __repr__(self) -> str:
        return f"ResourceFile({self.directory_path}/{self.name}, {self.content_type}, {self.size} bytes)"

    def read_bytes(self) -> bytes:
        if self._path is not None:
            return self._path.read_bytes()
        return self._body().read()

    def text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """The local copy, opened for reading (`rb` or `r`)."""
        if mode not in ("r", "rb", "rt"):
            raise ValueError("a resource is opened for reading only")
        return self.path.open(mode, **kwargs)

    @property
    def path(self) -> Path:
        """`<tmp>/runplane-<run>-<attempt>/<directory_path>/<name>`, downloaded the first time it is asked
        for (once, whichever thread asks)."""
        with self._downloading:
            if self._path is None:
                target = self._directory.joinpath(*self.directory_path.split("/"), self.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".part-")
                with self._body() as body, os.fdopen(handle, "wb") as out:
                    shutil.copyfileobj(body, out, 1024 * 1024)
                os.replace(partial, target)
                self._path = target
        return self._path

    @property
    def url(self) -> str:
        """A presigned GET of the bytes, valid for the deployment's `RUNPLANE_RESOURCE_URL_SECONDS`."""
        return self._sign()

    def described(self) -> dict[str, Any]:
        """What a remote runnable is sent of the resource: its metadata and a presigned `url`."""
        return {
            "id": self.id,
            "name": self.name,
            "directory_path": self.directory_path,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "metadata": self.metadata,
            "tags": self.tags,
            "url": self.url,
        }

    def _body(self) -> Any:
        try:
            return _blobs_here(self._bucket).stream(self._key)
        except FileNotFoundError:
            raise FileNotFoundError(f"resource {self.id} ({self.name}) was deleted") from None
