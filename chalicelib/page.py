"""The web chat page: one self-contained file under chalicelib/, so `chalice deploy` ships it."""

import functools
from pathlib import Path

_PAGE = Path(__file__).resolve().parent / "static" / "index.html"


@functools.cache
def html() -> str:
    """The page, read on first use: a warm container serves it from memory."""
    return _PAGE.read_text(encoding="utf-8")
