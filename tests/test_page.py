"""GET / serves the web chat page: self-contained, so it works offline and under a stage prefix,
and locked down by its headers. Every answer of the API tells browsers not to sniff its type.
The libraries it inlines are the pinned npm packages' own files, with their licences."""

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chalicelib import page
from chalicelib.settings import get_settings
from chalicelib.token_bounds import DEFAULT_MODEL_ID, MODELS
from chalicelib.validation import MAX_COMMENT_CHARS, MAX_SEARCH_CHARS, MAX_TITLE_CHARS
from local.tgi import TgiError


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *sources = directive.split()
        assert name not in parsed, f"{name} appears twice in {policy!r}"
        parsed[name] = sources
    return parsed


def sha256_source(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


@pytest.fixture
def fresh_page():
    """page.py reads its file and hashes it once; let a test read another file."""
    page.html.cache_clear()
    page._inline_sources.cache_clear()
    yield
    page.html.cache_clear()
    page._inline_sources.cache_clear()


def test_the_page_is_served_as_html(api):
    response = api.http.get("/")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    assert page.startswith("<!doctype html>")
    assert '<textarea id="message"' in page and "<script>" in page


class _Markup(HTMLParser):
    """The page's elements and their attributes (script and style content is text, not markup)."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def markup(html: str) -> list[tuple[str, dict]]:
    parser = _Markup()
    parser.feed(html)
    parser.close()
    return parser.elements


def test_the_page_loads_nothing_from_elsewhere(api):
    served = api.http.get("/").body.decode()
    own = page._PAGE.read_text(encoding="utf-8")  # the page's own code, without the libraries

    # No absolute or protocol-relative URLs in the page's own code; no element of the served page
    # loads anything (the libraries' own strings, such as XML namespaces, load nothing either).
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", own)
    elements = markup(served)
    assert not [(tag, attrs) for tag, attrs in elements
                if tag in {"link", "iframe", "img", "object", "embed", "base"}
                or {"src", "href", "srcset", "action", "data"} & attrs.keys()]
    # The two libraries, the page's own script and its data block of limits.
    assert [tag for tag, _ in elements].count("script") == 4
    (style,) = re.findall(r"<style>(.*?)</style>", served, re.DOTALL)
    assert "@import" not in style and "url(" not in style


def test_the_page_allows_only_its_own_script_and_style(api):
    response = api.http.get("/")
    html = response.body.decode()

    policy = directives(response.headers["Content-Security-Policy"])

    # Read here with a regular expression, independently of page.py's parser: the two libraries
    # and the page's own script, in that order.
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert scripts[:2] == [(LIBRARIES / name).read_text(encoding="utf-8") for name in SCRIPTS]
    assert policy == {
        "default-src": ["'none'"],
        "script-src": [sha256_source(script) for script in scripts],
        "style-src": [sha256_source(style)],
        "connect-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
        # HTML reaches the DOM through DOMPurify's Trusted Types policy alone.
        "require-trusted-types-for": ["'script'"],
        "trusted-types": ["dompurify"],
    }
    # Attributes no hash allows: inline styles and event handlers.
    assert not [(tag, attrs) for tag, attrs in markup(html)
                if "style" in attrs or any(name.startswith("on") for name in attrs)]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_hashes_follow_the_page_file(fresh_page, tmp_path, monkeypatch):
    changed = tmp_path / "index.html"
    changed.write_text("<!doctype html><style>p{}</style><script>let a = '<b>';</script>"
                       "<script>\nlet b = 1;\n</script>", encoding="utf-8")
    monkeypatch.setattr(page, "_PAGE", changed)

    policy = directives(page.content_security_policy())

    assert policy["script-src"] == [sha256_source("let a = '<b>';"), sha256_source("\nlet b = 1;\n")]
    assert policy["style-src"] == [sha256_source("p{}")]


def test_a_library_named_by_the_page_is_inlined_where_it_is_named(fresh_page, tmp_path, monkeypatch):
    (tmp_path / "libraries").mkdir()
    (tmp_path / "libraries" / "lib.min.js").write_text("var lib = '<b>';\n", encoding="utf-8")
    changed = tmp_path / "index.html"
    changed.write_text('<!doctype html><script src="libraries/lib.min.js"></script><script>lib;</script>',
                       encoding="utf-8")
    monkeypatch.setattr(page, "_PAGE", changed)

    assert page.html() == "<!doctype html><script>var lib = '<b>';\n</script><script>lib;</script>"
    assert directives(page.content_security_policy())["script-src"] == [
        sha256_source("var lib = '<b>';\n"), sha256_source("lib;")]


@pytest.mark.parametrize("code", ["x = '</script>';", "x = '</SCRIPT >';", "x = '<!--<script>';"])
def test_a_library_that_would_end_its_script_element_is_refused(fresh_page, tmp_path, monkeypatch, code):
    (tmp_path / "libraries").mkdir()
    (tmp_path / "libraries" / "lib.js").write_text(code, encoding="utf-8")
    changed = tmp_path / "index.html"
    changed.write_text('<!doctype html><script src="libraries/lib.js"></script>', encoding="utf-8")
    monkeypatch.setattr(page, "_PAGE", changed)

    with pytest.raises(ValueError, match="cannot be inlined"):
        page.html()


ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ROOT / "chalicelib" / "static" / "libraries"
# The page's libraries, in the order it loads them: the file shipped in libraries/, and its npm
# package and the file in it.
SCRIPTS = {
    "markdown-it.umd.min.js": ("markdown-it", "dist/browser/markdown-it.umd.min.js"),
    "purify.min.js": ("dompurify", "dist/purify.min.js"),
}
# Their licence texts, and those of the packages markdown-it's browser build bundles.
LICENCES = {
    "markdown-it.LICENSE": ("markdown-it", "LICENSE"),
    "dompurify.LICENSE": ("dompurify", "LICENSE"),
    "dompurify.LICENSE-MPL": ("dompurify", "LICENSE-MPL"),
    "entities.LICENSE": ("entities", "LICENSE"),
    "linkify-it.LICENSE": ("linkify-it", "LICENSE"),
    "mdurl.LICENSE": ("mdurl", "LICENSE"),
    "uc.micro.LICENSE": ("uc.micro", "LICENSE.txt"),
    "punycode.js.LICENSE": ("punycode.js", "LICENSE-MIT.txt"),
}


@pytest.mark.parametrize("shipped, package, path",
                         [(name, *source) for name, source in {**SCRIPTS, **LICENCES}.items()])
def test_the_shipped_libraries_are_the_pinned_npm_packages_files(shipped, package, path):
    installed = ROOT / "node_modules" / package
    version = json.loads((installed / "package.json").read_text())["version"]
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"][f"node_modules/{package}"]

    assert (LIBRARIES / shipped).read_bytes() == (installed / path).read_bytes()
    if package in pins:  # markdown-it's bundled dependencies are pinned by its own lock entry
        assert pins[package] == locked["version"] == version
    else:
        assert locked["version"] == version


def test_libraries_hold_only_what_is_checked():
    assert {file.name for file in LIBRARIES.iterdir()} == {*SCRIPTS, *LICENCES, "README.md"}
    named = re.findall(r'<script src="libraries/([^"]+)"></script>', page._PAGE.read_text(encoding="utf-8"))
    assert named == list(SCRIPTS)


def test_the_page_takes_the_apis_limits_in_a_data_block_that_needs_no_hash(api):
    response = api.http.get("/")
    html = response.body.decode()

    (limits,) = re.findall(r'<script id="limits" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert json.loads(limits) == {"title": MAX_TITLE_CHARS, "comment": MAX_COMMENT_CHARS, "search": MAX_SEARCH_CHARS}
    # Data, never run: the policy allows exactly the page's code, and no hash of the limits.
    assert sha256_source(limits) not in directives(response.headers["Content-Security-Policy"])["script-src"]


def test_a_page_without_inline_code_allows_none(fresh_page, tmp_path, monkeypatch):
    changed = tmp_path / "index.html"
    changed.write_text("<!doctype html><p>static</p>", encoding="utf-8")
    monkeypatch.setattr(page, "_PAGE", changed)

    policy = directives(page.content_security_policy())

    assert policy["script-src"] == ["'none'"] and policy["style-src"] == ["'none'"]


def test_extra_connect_origins_join_self_and_nothing_else_changes():
    plain = directives(page.content_security_policy())

    extended = directives(page.content_security_policy(
        ("wss://abc123.execute-api.us-east-1.amazonaws.com", "https://auth.example.com:8443")))

    assert extended["connect-src"] == [
        "'self'", "wss://abc123.execute-api.us-east-1.amazonaws.com", "https://auth.example.com:8443"]
    assert {name: sources for name, sources in extended.items() if name != "connect-src"} == {
        name: sources for name, sources in plain.items() if name != "connect-src"}


@pytest.mark.parametrize("origin", [
    "wss://x.example.com; script-src *",  # would add a directive
    "https://x.example.com 'unsafe-inline'",
    "*",
    "'unsafe-eval'",
    "javascript:alert(1)",
    "ftp://x.example.com",
    "https://x.example.com/path",
    "https://x.example.com\r\nSet-Cookie: a=b",
    "https://x.example.com\n",
    "",
])
def test_a_connect_origin_that_is_not_one_origin_is_refused(origin):
    with pytest.raises(ValueError, match="connect-src origin"):
        page.content_security_policy((origin,))


def test_the_page_headers_take_the_extra_origins():
    headers = page.headers(("ws://127.0.0.1:8001",))

    assert directives(headers["Content-Security-Policy"])["connect-src"] == ["'self'", "ws://127.0.0.1:8001"]


JSON = {"content-type": "application/json"}
ANSWERS = {
    # name: (method, path, headers, body, expected status)
    "chat GET": ("GET", "/chat?sessionid=s&query=hi", {}, None, 200),
    "chat GET, bad session id": ("GET", "/chat?sessionid=%3Cb%3E&query=hi", {}, None, 400),
    "chat POST": ("POST", "/chat", JSON, json.dumps({"sessionid": "s", "query": "hi"}), 200),
    "chat POST, malformed JSON": ("POST", "/chat", JSON, "{", 400),
    "chat POST, wrong content type": ("POST", "/chat", {"content-type": "text/html"}, "<b>", 400),
    "messages, a session not found": ("GET", "/sessions/s/messages", {}, None, 404),
    "messages, bad limit": ("GET", "/sessions/s/messages?limit=0", {}, None, 400),
    "delete, a session not found": ("DELETE", "/sessions/s", {}, None, 404),
    "delete, wrong content type (Chalice's 415)": ("DELETE", "/sessions/s", {"content-type": "text/html"}, "x", 415),
    "chat PUT (Chalice's 405)": ("PUT", "/chat", JSON, "{}", 405),
}


@pytest.mark.parametrize("method, path, headers, body, status", ANSWERS.values(), ids=ANSWERS.keys())
def test_every_json_answer_says_nosniff(api, method, path, headers, body, status):
    response = api.http.request(method, path, headers=headers, body=(body or "").encode())

    assert response.status_code == status
    assert isinstance(json.loads(response.body), dict)  # API Gateway labels it application/json
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("failure, status", [
    (TgiError(500, "CUDA out of memory", "generation"), 502),
    (RuntimeError("a bug"), 500),
])
def test_a_failed_turn_says_nosniff(api, endpoint, failure, status):
    endpoint.fail_next(failure)

    response = api.http.get("/chat?sessionid=s&query=hi")

    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("model_id, name", [
    (None, "Llama 2 7B Chat"),
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B Instruct"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral 7B Instruct v0.3"),
])
def test_config_names_the_deployed_model_for_the_page(api, settings_env, model_id, name):
    if model_id:
        settings_env.setenv("MODEL_ID", model_id)
        get_settings.cache_clear()

    assert api.http.get("/config").json_body["model"] == name
    assert "<title>Chat</title>" in api.http.get("/").body.decode()  # the page names it from /config


def test_config_names_a_model_outside_the_documented_ones_by_model_name(api, settings_env):
    """make run's local model: MODEL_NAME names it; MODEL_ID's family still bounds its tokens."""
    settings_env.setenv("MODEL_NAME", "SmolLM2 135M Instruct")
    get_settings.cache_clear()

    assert api.http.get("/config").json_body["model"] == "SmolLM2 135M Instruct"
    assert get_settings().model.family is MODELS[DEFAULT_MODEL_ID].family


def test_config_names_the_websocket_api_and_the_page_may_connect_to_it_alone(api, settings_env):
    assert api.http.get("/config").json_body["websocket_url"] is None
    assert "connect-src 'self';" in api.http.get("/").headers["Content-Security-Policy"]

    settings_env.setenv("WEBSOCKET_URL", "wss://abc123.execute-api.us-east-1.amazonaws.com/api")
    get_settings.cache_clear()

    assert api.http.get("/config").json_body["websocket_url"] == "wss://abc123.execute-api.us-east-1.amazonaws.com/api"
    policy = api.http.get("/").headers["Content-Security-Policy"]
    assert "connect-src 'self' wss://abc123.execute-api.us-east-1.amazonaws.com;" in policy


SIGN_IN = {"USER_POOL_ID": "us-east-1_Abc123", "USER_POOL_CLIENT_ID": "pageclient123"}


@pytest.mark.parametrize("endpoint_override, origin", [
    (None, "https://cognito-idp.us-east-1.amazonaws.com"),  # AWS's, in the pool's region
    ("http://127.0.0.1:9229", "http://127.0.0.1:9229"),  # make run's stand-in
])
def test_with_sign_in_the_page_may_connect_to_the_cognito_endpoint_it_calls_alone(
        api, settings_env, endpoint_override, origin):
    for name, value in SIGN_IN.items():
        settings_env.setenv(name, value)
    if endpoint_override:
        settings_env.setenv("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", endpoint_override)
    get_settings.cache_clear()

    endpoint = api.http.get("/config").json_body["sign_in"]["endpoint"]
    policy = directives(api.http.get("/").headers["Content-Security-Policy"])

    assert endpoint == origin
    assert policy["connect-src"] == ["'self'", origin]


def test_the_page_may_connect_to_the_websocket_api_and_cognito_and_nothing_else(api, settings_env):
    for name, value in {**SIGN_IN, "WEBSOCKET_URL": "wss://abc123.execute-api.eu-west-1.amazonaws.com/api",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        settings_env.setenv(name, value)
    get_settings.cache_clear()

    policy = directives(api.http.get("/").headers["Content-Security-Policy"])

    assert policy["connect-src"] == ["'self'", "wss://abc123.execute-api.eu-west-1.amazonaws.com",
                                     "https://cognito-idp.eu-west-1.amazonaws.com"]
