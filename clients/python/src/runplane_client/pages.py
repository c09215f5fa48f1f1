"""Listings: an iterator over every item that fetches the next page when it needs it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from runplane_client.models import Page

T = TypeVar("T")


class Pager(Generic[T]):
    """Iterate for the items; `pages()` for each page as served (a run page's `totals`, say). Each
    iteration starts from the first page again."""

    def __init__(self, fetch: Callable[[str | None], Page[T]]):
        self._fetch = fetch

    def pages(self) -> Iterator[Page[T]]:
        cursor: str | None = None
        while True:
            page = self._fetch(cursor)
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.items
