"""`client.runnables`: what runs execute."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from runplane_client import endpoints as e
from runplane_client.errors import Conflict, NotFound
from runplane_client.models import Runnable, RunnableKind, RunnablePage, RunnableSpec
from runplane_client.pages import Pager
from runplane_client.transport import Transport


def is_id(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


class Runnables:
    def __init__(self, transport: Transport):
        self._transport = transport

    def create(self, name: str, kind: RunnableKind, config: dict[str, Any], **fields: Any) -> Runnable:
        """Register a runnable; `fields` are RunnableSpec's others (input_schema, timeout_seconds, tags,
        ...). A name the account already uses is a Conflict. A retry of a creation whose answer was lost
        (the first attempt did create it) answers the runnable it created."""
        spec = RunnableSpec(name=name, kind=kind, config=config, **fields)
        try:
            return self._runnable(e.CREATE_RUNNABLE, body=spec)
        except Conflict as conflict:
            if conflict.attempts > 1 and (mine := self._created_by(spec)):
                return mine
            raise

    def _created_by(self, spec: RunnableSpec) -> Runnable | None:
        """The runnable named as `spec` if it holds every field `spec` gave."""
        try:
            found = self.get_by_name(spec.name)
        except NotFound:
            return None
        held = found.spec().body()
        return found if all(held.get(k) == v for k, v in spec.body().items()) else None

    def get(self, runnable_id: str) -> Runnable:
        return self._runnable(e.GET_RUNNABLE, path={"id": runnable_id})

    def get_by_name(self, name: str) -> Runnable:
        """The account's runnable called `name` (NotFound if none is)."""
        pages = Pager(lambda cursor: self._page({"name": name, "cursor": cursor}))
        found = next((runnable for runnable in pages if runnable.name == name), None)
        if found is None:
            raise NotFound(404, "runnable_not_found", f"No runnable named {name!r}")
        return found

    def list(self, *, limit: int = 50) -> Pager[Runnable]:
        """Every runnable of the account, fetched `limit` at a time."""
        return Pager(lambda cursor: self._page({"limit": limit, "cursor": cursor}))

    def update(self, runnable: str | Runnable, **changes: Any) -> Runnable:
        """Replace the runnable with its fields as they are (read now, or as `runnable` holds them)
        changed by `changes` (`timeout_seconds=None` clears one). Runs already accepted keep theirs."""
        current = runnable if isinstance(runnable, Runnable) else self.get(self.id_of(runnable))
        spec = RunnableSpec(**{**current.spec().model_dump(), **changes})
        return self._runnable(e.REPLACE_RUNNABLE, path={"id": current.id}, body=spec)

    def delete(self, runnable: str | Runnable) -> None:
        self._transport.call(e.DELETE_RUNNABLE, path={"id": self.id_of(runnable)})

    def id_of(self, runnable: str | Runnable) -> str:
        """The id of `runnable`: a Runnable, an id, or a name (looked up)."""
        if isinstance(runnable, Runnable):
            return runnable.id
        return runnable if is_id(runnable) else self.get_by_name(runnable).id

    def _page(self, query: dict[str, Any]) -> RunnablePage:
        return RunnablePage.model_validate(self._transport.call(e.LIST_RUNNABLES, query=query))

    def _runnable(self, endpoint: e.Endpoint, **call: Any) -> Runnable:
        return Runnable.model_validate(self._transport.call(endpoint, **call))
