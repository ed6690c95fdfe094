"""The web chat page: one self-contained file under chalicelib/, so `chalice deploy` ships it,
and the headers that lock it down.

The libraries the page uses (static/libraries/, each the exact file its pinned npm package
ships; see static/libraries/README.md) are inlined where the page names them with
`<script src="libraries/NAME"></script>`, so the page is still one document that loads nothing.
Its inline scripts and style are allowed by their sha256 hashes, computed from the served page
itself at first use, so the policy can never go stale when the page or a library changes.

The API's limits the page checks as the user types (a title, a comment, a search) are written
into its `limits` data block from chalicelib/validation.py, their one home.
"""

import base64
import functools
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from chalicelib.validation import MAX_COMMENT_CHARS, MAX_SEARCH_CHARS, MAX_TITLE_CHARS

_PAGE = Path(__file__).resolve().parent / "static" / "index.html"
# Where the page names a library; the name is a file of static/libraries/, nothing else.
_LIBRARY_SCRIPT = re.compile(r'<script src="libraries/([A-Za-z0-9_-][A-Za-z0-9._-]*\.js)"></script>')
# What would end an inline <script> early, or make a later "</script>" not end it (the HTML
# parser's double-escaped script state): a library containing either cannot be inlined.
_ENDS_SCRIPT = re.compile(r"</?script", re.IGNORECASE)
# What a connect-src origin may be: a scheme, a host and an optional port, nothing else,
# so an origin can never end the directive or add another one.
_ORIGIN = re.compile(r"(?:https?|wss?)://[A-Za-z0-9.-]+(?::\d{1,5})?")
# Where the page takes the API's limits: a JSON data block, which browsers never run.
_LIMITS_BLOCK = '<script id="limits" type="application/json"></script>'
_DATA_BLOCK_TYPE = "application/json"
LIMITS = {"title": MAX_TITLE_CHARS, "comment": MAX_COMMENT_CHARS, "search": MAX_SEARCH_CHARS}


@functools.cache
def html() -> str:
    """The page with its libraries inlined and the API's limits written in, read on first use: a
    warm container serves it from memory."""
    text = _PAGE.read_text(encoding="utf-8").replace(
        _LIMITS_BLOCK, f'<script id="limits" type="{_DATA_BLOCK_TYPE}">{json.dumps(LIMITS)}</script>')
    return _LIBRARY_SCRIPT.sub(lambda named: f"<script>{_library(named[1])}</script>", text)


def _library(name: str) -> str:
    code = (_PAGE.parent / "libraries" / name).read_text(encoding="utf-8")
    if _ENDS_SCRIPT.search(code):
        raise ValueError(f"libraries/{name} contains <script or </script: it cannot be inlined in the page")
    return code


class _InlineCode(HTMLParser):
    """Collects the text of each <script> and <style> element, exactly as a browser hashes it
    (a JSON data block is no code: it needs no hash).

    The standard library's parser already treats these elements' content as raw text, as
    browsers do; a regular expression would not know about comments or attributes.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.elements and dict(attrs).get("type") != _DATA_BLOCK_TYPE:
            self._open = tag
            self.elements[tag].append("")

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.elements[self._open][-1] += data


def _hash_sources(code: list[str]) -> str:
    if not code:
        return "'none'"
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"
                    for text in code)


@functools.cache
def _inline_sources() -> tuple[str, str]:
    """The script-src and style-src sources that allow exactly the page's own inline code."""
    parser = _InlineCode()
    parser.feed(html())
    parser.close()
    return _hash_sources(parser.elements["script"]), _hash_sources(parser.elements["style"])


def connect_origins(settings) -> tuple[str, ...]:
    """The origins the page calls besides its own, exactly as GET /config names them: the
    WebSocket API's, and with sign-in Cognito's API (`sign_in.endpoint`, an origin by its setting's
    pattern; the policy refuses it otherwise)."""
    origins = [settings.websocket_origin]
    if settings.sign_in_enabled:
        origins.append(settings.cognito_endpoint)
    return tuple(origin for origin in origins if origin)


def content_security_policy(connect_origins: tuple[str, ...] = ()) -> str:
    """The page's policy: its own script and style, requests to the app itself and to
    `connect_origins` (e.g. a WebSocket API's `wss://` origin), nothing else, in no frame.

    Trusted Types: the DOM's HTML sinks (innerHTML, DOMParser...) take only what a policy made,
    and the one policy allowed is DOMPurify's, so HTML reaches the DOM only through the sanitizer
    (browsers without Trusted Types ignore both directives)."""
    for origin in connect_origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"a connect-src origin is http(s):// or ws(s)://, a host and a port, "
                             f"not {origin!r}")
    scripts, styles = _inline_sources()
    directives = {
        "default-src": "'none'",
        "script-src": scripts,
        "style-src": styles,
        "connect-src": " ".join(("'self'", *connect_origins)),
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
        "require-trusted-types-for": "'script'",
        "trusted-types": "dompurify",
    }
    return "; ".join(f"{name} {sources}" for name, sources in directives.items())


def headers(connect_origins: tuple[str, ...] = ()) -> dict[str, str]:
    """The headers GET / answers with (X-Content-Type-Options comes with every answer, see app.py)."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(connect_origins),
        "Referrer-Policy": "no-referrer",
    }
