"""Limits on the JSON documents Runplane stores and serves back."""

from __future__ import annotations

# pydantic refuses to read JSON nested about 200 deep, so a deeper document, once stored, could not be
# served; Runplane refuses it where it comes in.
MAX_DEPTH = 64


def too_deep(document: object, limit: int = MAX_DEPTH) -> bool:
    """Whether `document` nests objects and arrays more than `limit` deep (iterative: no recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                pending.append((child, depth + 1))
    return False
