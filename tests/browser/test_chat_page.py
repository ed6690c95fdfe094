"""The web chat page in a real browser: Debian's Chromium, driven by Playwright, against
`chalice local` (stage `local`) with dynalite, the fake model served over HTTP and moto's
cognito-idp as the user pool, which has no WebSocket API (answers come from POST /chat), and
against `make run`'s launcher, whose answers stream over its local WebSocket gateway, SNS, SQS and
worker, and whose local user the page signs in by itself.

Conversations belong to their user, so each test of `chalice local` signs in a user of its own
through the page's form.

Playwright's own browser download is not reachable here, so the test needs the `chromium`
package's binary; screenshots go to test-artifacts/ for a person to look at.
"""

import base64
import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from playwright.sync_api import expect, sync_playwright
from websockets.sync.client import connect

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from chalicelib.table import CONNECTION_PREFIX, CONNECTION_SORT_KEY, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from chalicelib.waking import POLL_SECONDS, WAKE_SECONDS
from client.rest import call
from local.cognito import create_page_client, create_user, create_user_pool
from local.fake_model import HTML_REPLY, FakeEndpoint, serving
from local.id_token import local_user_token
from local.messaging import moto_server_command
from local.net import free_port, wait_until_up
from local.table import ensure_table, local_table_name
from local.tgi import TgiError
from tests.servers import ROOT, running

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root, and no calls to Google's services: everything stays on 127.0.0.1.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)"
)


@pytest.fixture(scope="module")
def model():
    with serving(FakeEndpoint(DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS)) as server:
        yield server


# Slow enough that an answer of a few dozen words streams for seconds, in many deltas.
TOKENS_PER_SECOND = 20
# Its answer ("Answer N to: <question>") is about 50 tokens: 2.5 s at TOKENS_PER_SECOND.
LONG_QUESTION = ("Please tell me, in as many words as you like, everything you know about the history of the "
                 "city of Paris, from the Romans who called it Lutetia to the present day, its rivers, bridges, "
                 "churches, markets and famous streets.")
STREAMED = 20_000  # ms a streamed answer may take, in expect()
# Every expect() without a timeout of its own: Playwright's 5 s default fails a test whenever the
# shared machine is busy, though the page is right; a wrong page still fails, only later.
expect.set_options(timeout=15_000)
# What the page says while the model wakes: the service's estimate, in minutes, rounded up.
WAKING_NOTICE = f"The model is starting, about {math.ceil(WAKE_SECONDS / 60)} minutes."


@dataclass(frozen=True)
class User:
    name: str
    password: str
    token: str  # an ID token, for the test's own requests to the API


@dataclass(frozen=True)
class UserPool:
    """A user pool and the page's app client in moto's cognito-idp, a real server on 127.0.0.1."""

    endpoint: str
    pool_id: str
    client_id: str

    def client(self):
        return boto3.client("cognito-idp", endpoint_url=self.endpoint)

    def add_user(self, password: str = "Pass-word-1") -> str:
        """A new user (an e-mail address, as the stack's pool signs in) with a password."""
        name = f"user-{uuid.uuid4().hex[:8]}@example.com"
        create_user(self.client(), self.pool_id, name, password)
        return name

    def add_user_to_set_a_password(self, temporary_password: str) -> str:
        """A new user as an administrator creates one: it must choose a password at sign-in."""
        name = f"user-{uuid.uuid4().hex[:8]}@example.com"
        self.client().admin_create_user(UserPoolId=self.pool_id, Username=name, TemporaryPassword=temporary_password,
                                        MessageAction="SUPPRESS", UserAttributes=[{"Name": "email", "Value": name}])
        return name

    def env(self) -> dict[str, str]:
        """What the app needs to know the pool (the page gets it from GET /config)."""
        return {"USER_POOL_ID": self.pool_id, "USER_POOL_CLIENT_ID": self.client_id,
                "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": self.endpoint}


def id_token(endpoint: str, client_id: str, name: str, password: str) -> str:
    client = boto3.client("cognito-idp", endpoint_url=endpoint)
    signed_in = client.initiate_auth(ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH",
                                     AuthParameters={"USERNAME": name, "PASSWORD": password})
    return signed_in["AuthenticationResult"]["IdToken"]


@pytest.fixture(scope="module")
def user_pool():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running(moto_server_command(port), endpoint + "/moto-api/"):
        client = boto3.client("cognito-idp", endpoint_url=endpoint)
        pool_id = create_user_pool(client, "browser-tests")
        yield UserPool(endpoint, pool_id, create_page_client(client, pool_id))


@pytest.fixture
def user(user_pool):
    """A user of this test alone, so that its conversations are the only ones listed."""
    name = user_pool.add_user("Pass-word-1")
    return User(name, "Pass-word-1", id_token(user_pool.endpoint, user_pool.client_id, name, "Pass-word-1"))


@contextlib.contextmanager
def chalice_local(model, dynalite_url, user_pool, **env):
    """`chalice local` as `make run` starts it, on the local DynamoDB, the fake model and the user pool."""
    ensure_table(boto3.client("dynamodb", endpoint_url=dynalite_url), local_table_name())
    chalice = shutil.which("chalice", path=os.path.dirname(sys.executable))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [chalice, "local", "--stage", "local", "--no-autoreload", "--host", "127.0.0.1", "--port", str(port)]
    env = {"AWS_ENDPOINT_URL_DYNAMODB": dynalite_url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": model.url,
           **user_pool.env(), **env}
    with running(command, url, env):
        yield url


@pytest.fixture(scope="module")
def app_url(model, dynalite_url, user_pool):
    """The app without a WebSocket API: GET /config answers null."""
    with chalice_local(model, dynalite_url, user_pool) as url:
        yield url


@pytest.fixture(scope="module")
def unreachable_websocket_url(model, dynalite_url, user_pool):
    """The app with a WebSocket API that cannot be reached: nothing listens on its port."""
    with chalice_local(model, dynalite_url, user_pool, WEBSOCKET_URL=f"ws://127.0.0.1:{free_port()}") as url:
        yield url


@pytest.fixture(scope="module")
def streaming_model():
    fake = FakeEndpoint(DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS, tokens_per_second=TOKENS_PER_SECOND)
    with serving(fake) as server:
        yield server


@pytest.fixture(scope="module")
def streaming_url(streaming_model, dynalite_url, tmp_path_factory):
    """`make run`'s launcher (`python -m local.run`), which starts chalice local, the WebSocket
    gateway, moto's SNS and SQS and the SQS poller, on the test's dynalite and fake model (so it
    starts neither). Stopped as Ctrl-C stops it. One turn over a WebSocket first, so that every
    process has loaded the app before a test's turn."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {"PORT": str(port), "LOCAL_DATA_DIR": str(tmp_path_factory.mktemp("local-data")),
           "AWS_ENDPOINT_URL_DYNAMODB": dynalite_url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": streaming_model.url}
    with running([sys.executable, "-m", "local.run"], url + "config", env, timeout=180):
        websocket_url = get_json(url + "config")["websocket_url"]
        wait_until_up(websocket_url.replace("ws://", "http://", 1), 60)  # a plain GET gets 426
        with connect(f"{websocket_url}?token={local_user_token(url)}", open_timeout=10) as client:
            client.send(json.dumps({"action": "chat", "sessionid": f"warm-up-{uuid.uuid4()}", "query": "Hi"}))
            while json.loads(client.recv(timeout=60))["type"] not in ("done", "error"):
                pass
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Reports every Content-Security-Policy violation to the test, on every document the page loads.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => reportCspViolation(
  `${event.effectiveDirective} blocked ${event.blockedURI || "inline code"}`
  + ` at ${event.sourceFile}:${event.lineNumber}`));
"""


def watch_csp_violations(context) -> list[str]:
    """The violations the context's pages report, as events and as Chromium's console messages."""
    violations = []
    context.expose_function("reportCspViolation", lambda text: violations.append(text))
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    context.on("console", lambda message: violations.append(message.text)
               if "Content Security Policy" in message.text else None)
    return violations


@pytest.fixture
def page(browser):
    """A fresh profile (empty localStorage) per test; an uncaught script error or anything the
    page's Content-Security-Policy blocks fails the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    violations = watch_csp_violations(context)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    yield page
    context.close()
    assert not errors, f"script errors on the page: {errors}"
    assert not violations, f"Content-Security-Policy violations: {violations}"


def get_json(url: str, token: str | None = None) -> dict:
    status, body = call("GET", url, token=token)
    assert status == 200, body
    return body


def sign_in(page, url: str, name: str, password: str) -> None:
    """Sign in with the page's form and wait for the chat."""
    page.goto(url)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()


def open_chat(page, url: str, user: User) -> None:
    sign_in(page, url, user.name, user.password)


def open_local_chat(page, url: str) -> None:
    """make run's page, which signs its local user in by itself."""
    page.goto(url)
    expect(page.get_by_text(re.compile(r"^Local mode: signed in as "))).to_be_visible()


def conversation(page):
    """The conversation shown: its messages, oldest first."""
    return page.get_by_role("region", name="Conversation")


def texts(page):
    """The conversation's messages, as the locator of their texts (an answer's, rendered)."""
    return conversation(page).locator(".message .text")


def answer_to(question: str) -> re.Pattern:
    return re.compile(rf"^Answer \d+ to: {re.escape(question)}$")


def ask(page, question: str) -> None:
    """Send `question` with the Enter key and wait for its answer."""
    box = page.get_by_label("Message")
    box.fill(question)
    box.press("Enter")
    expect(texts(page).last).to_have_text(answer_to(question), timeout=STREAMED)  # the app's first turn is slow
    expect(box).to_have_value("")


def sent_turns(page) -> list[str]:
    """The `turn` of every POST /chat the page sends from now on, in order."""
    turns = []
    page.on("request", lambda request: turns.append(request.post_data_json["turn"])
            if request.method == "POST" and request.url.endswith("/chat") else None)
    return turns


def fail(page, model, question: str) -> None:
    """Send `question` while the model fails, and wait for the error."""
    model.fake.fail_next(TgiError(500, "CUDA out of memory", "generation"))
    box = page.get_by_label("Message")
    box.fill(question)
    with page.expect_response(re.compile(r"/chat$")) as failed:
        box.press("Enter")
    assert failed.value.status == 502
    expect(page.get_by_role("alert")).to_be_visible()


def conversations(page):
    """The buttons that open this browser's past conversations, newest first."""
    return page.get_by_role("navigation", name="Conversations").locator("button.open")


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)


def test_two_turns_are_answered_and_restored_after_a_reload(page, app_url, model, user):
    open_chat(page, app_url, user)
    box = page.get_by_label("Message")
    send = page.get_by_role("button", name="Send")

    ask(page, "What is the capital of France?")
    box.press_sequentially("And of Italy?")
    box.press("Shift+Enter")
    box.press_sequentially("One word, please.")
    second = "And of Italy?\nOne word, please."
    expect(box).to_have_value(second)
    with model.holding_answers():
        send.click()
        expect(page.get_by_role("status")).to_have_text("Llama 2 7B Chat is answering…")
        expect(send).to_be_disabled()
        expect(box).to_have_value(second)
    conversation = ["What is the capital of France?", answer_to("What is the capital of France?"),
                    second, answer_to(second)]
    expect(texts(page)).to_have_text(conversation)
    expect(page.get_by_role("status")).to_have_text("")
    expect(texts(page).last).to_be_in_viewport()
    screenshot(page, "chat-page.png")

    with page.expect_response(re.compile(r"/sessions/[^/]+/messages$")) as loaded:
        page.reload()
    assert loaded.value.ok
    expect(texts(page)).to_have_text(conversation)
    expect(conversations(page)).to_have_text(["What is the capital of France?"])


def test_new_chat_open_and_delete(page, app_url, user):
    open_chat(page, app_url, user)
    ask(page, "first chat")
    page.get_by_role("button", name="New chat").click()
    expect(texts(page)).to_have_count(0)
    expect(page.get_by_label("Message")).to_be_focused()
    ask(page, "second chat")
    expect(conversations(page)).to_have_count(2)

    with page.expect_response(re.compile(r"/sessions/[^/]+/messages$")):
        page.get_by_role("button", name="first chat", exact=True).click()
    expect(texts(page)).to_have_text(["first chat", answer_to("first chat")])

    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda response: response.request.method == "DELETE") as deleted:
        page.get_by_role("button", name="Delete conversation: second chat").click()
    assert deleted.value.json()["deleted_turns"] == 1
    expect(conversations(page)).to_have_text(["first chat"])
    expect(texts(page)).to_have_count(2)  # the open conversation stays
    assert call("GET", deleted.value.url + "/messages", token=user.token)[0] == 404  # gone

    page.get_by_role("button", name="Delete conversation: first chat").click()
    expect(conversations(page)).to_have_count(0)
    expect(texts(page)).to_have_count(0)  # the open one was deleted: a new chat begins


def test_html_in_messages_is_shown_as_text(page, app_url, user):
    open_chat(page, app_url, user)
    page.get_by_label("Message").fill("<b>Some</b> html please")
    page.get_by_label("Message").press("Enter")

    expect(texts(page)).to_have_text(["<b>Some</b> html please", HTML_REPLY])
    log = conversation(page)
    expect(log.locator("img, b")).to_have_count(0)
    assert page.evaluate("window.__xss") is None


def test_a_failed_turn_shows_the_error_and_keeps_the_text(page, app_url, model, user):
    open_chat(page, app_url, user)
    box = page.get_by_label("Message")

    fail(page, model, "Please keep me")
    expect(page.get_by_role("alert")).to_contain_text("the model failed (status 500)")
    expect(box).to_have_value("Please keep me")
    expect(box).to_be_editable()
    expect(texts(page)).to_have_count(0)
    expect(conversations(page)).to_have_count(0)

    page.get_by_role("button", name="Send").click()
    expect(texts(page)).to_have_text(["Please keep me", answer_to("Please keep me")])
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(box).to_have_value("")


def test_a_retry_keeps_its_turn_id_and_a_new_question_gets_a_new_one(page, app_url, model, user):
    open_chat(page, app_url, user)
    turns = sent_turns(page)

    fail(page, model, "Same question")
    page.get_by_role("button", name="Send").click()  # the text stayed in the box: a retry
    expect(texts(page)).to_have_text(["Same question", answer_to("Same question")])
    ask(page, "Same question")  # answered before: asked again, a new turn
    fail(page, model, "Another question")
    ask(page, "Another question, reworded")

    assert len(turns) == 5
    assert turns[1] == turns[0]
    assert len(set(turns)) == 4
    assert all(uuid.UUID(turn).version == 4 and str(uuid.UUID(turn)) == turn for turn in turns)


def test_a_retry_in_another_conversation_is_a_new_turn(page, app_url, model, user):
    open_chat(page, app_url, user)
    turns = sent_turns(page)

    fail(page, model, "Where was I?")
    page.get_by_role("button", name="New chat").click()
    page.get_by_role("button", name="Send").click()

    expect(texts(page)).to_have_text(["Where was I?", answer_to("Where was I?")])
    assert len(turns) == 2 and turns[0] != turns[1]


def test_turn_ids_without_random_uuid_are_valid_turn_ids(page, app_url, user):
    # On plain http to a LAN address crypto.randomUUID does not exist.
    page.add_init_script("delete Crypto.prototype.randomUUID;")
    open_chat(page, app_url, user)
    turns = sent_turns(page)

    ask(page, "Am I insecure?")

    (turn,) = turns
    assert re.fullmatch(r"[0-9a-f]{32}", turn)  # within the API's 1 to 64 of A-Z a-z 0-9 _ -


@pytest.mark.parametrize("stage_path", ["api", "api/"])
def test_the_page_works_under_an_api_gateway_stage_prefix(page, app_url, stage_path, user):
    # Signed in first: Chromium lets no page that Playwright fulfils call a loopback address (Cognito).
    open_chat(page, app_url, user)
    # Serve the app under /api, as API Gateway does, by rewriting the browser's requests.
    page.route(re.compile(r"/api(/|$)"), lambda route: route.fulfill(
        response=route.fetch(url=route.request.url.replace("/api", "", 1))))
    page.goto(app_url + stage_path)

    with page.expect_request(app_url + "api/chat"), page.expect_response(app_url + "api/sessions") as listed:
        ask(page, "Where am I?")
    # The list that follows a turn, also under the prefix (and answered before the test ends).
    assert listed.value.ok
    expect(conversations(page)).to_have_text(["Where am I?"])


def test_the_policy_blocks_what_the_page_does_not_ship_and_the_test_sees_it(browser, app_url):
    """What the `page` fixture relies on: injected code (stopped by Trusted Types before its
    script-src can be asked), Trusted Types policies but DOMPurify's, images and other origins are
    blocked, framing is refused, and every one of them is reported."""
    context = browser.new_context()
    violations = watch_csp_violations(context)
    page = context.new_page()
    page.goto(app_url)
    page.evaluate("""() => {
      const script = document.createElement("script");
      try {
        script.textContent = "window.__injected = true;";  // a Trusted Types sink: it throws
      } catch {}
      script.append(document.createTextNode("window.__injected = true;"));  // around the sink: never run
      document.body.append(script);
      for (const name of ["dompurify", "another"]) {  // DOMPurify's name is taken, any other refused
        try {
          trustedTypes.createPolicy(name, { createHTML: (html) => html });
        } catch {}
      }
      document.body.append(Object.assign(document.createElement("img"), { src: "favicon.png" }));
      fetch("http://127.0.0.1:9/elsewhere").catch(() => {});
    }""")
    framing = context.new_page()  # about:blank, a page without a policy of its own, frames the chat
    framing.set_content(f'<iframe src="{app_url}"></iframe>')

    blocked = ["require-trusted-types-for blocked trusted-types-sink", "trusted-types blocked trusted-types-policy",
               "img-src blocked " + app_url + "favicon.png", "connect-src blocked http://127.0.0.1:9/elsewhere",
               "frame-ancestors 'none'"]
    deadline = time.monotonic() + 10
    while not all(any(what in v for v in violations) for what in blocked) and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert page.evaluate("window.__injected") is None
    context.close()
    assert all(any(what in v for v in violations) for what in blocked), "\n".join(violations)
    assert sum("trusted-types blocked trusted-types-policy" in v for v in violations) == 2, violations


def test_without_a_websocket_api_answers_come_from_post_chat(page, app_url, user):
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    with page.expect_response(re.compile(r"/config$")) as config:
        open_chat(page, app_url, user)
    assert config.value.json()["websocket_url"] is None

    with page.expect_request(re.compile(r"/chat$")) as posted:
        ask(page, "No streaming here?")
    assert posted.value.method == "POST"
    assert sockets == []


def test_when_no_websocket_opens_answers_come_from_post_chat(page, unreachable_websocket_url, user):
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    open_chat(page, unreachable_websocket_url, user)

    with page.expect_request(re.compile(r"/chat$")) as posted:
        ask(page, "Is anybody there?")
    assert posted.value.method == "POST"
    assert sockets and all(socket.is_closed() for socket in sockets)
    expect(page.get_by_role("alert")).to_be_hidden()


def websocket_messages(page) -> tuple[list[dict], list[dict]]:
    """The messages the page sends on its WebSockets, and those it receives, from now on."""
    sent, received = [], []

    def watch(websocket):
        websocket.on("framesent", lambda payload: sent.append(json.loads(payload)))
        websocket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    page.on("websocket", watch)
    return sent, received


def watch_renderings(page) -> None:
    """Record every text the newest answer shows, in window.__renderings."""
    page.evaluate("""() => {
      window.__renderings = [];
      const log = document.getElementById("log");
      new MutationObserver(() => {
        const answer = log.querySelector(".message.assistant:last-child .text");
        if (answer) window.__renderings.push(answer.textContent);
      }).observe(log, { subtree: true, childList: true, characterData: true });
    }""")


def turn_status(app_url: str, token: str, sessionid: str, turn: str) -> dict:
    return get_json(f"{app_url}sessions/{sessionid}/turns/{turn}", token)


def wait_for_turn(app_url: str, token: str, sessionid: str, turn: str, timeout: float = 10) -> None:
    """Until the service has the turn (its status is no longer 404)."""
    deadline = time.monotonic() + timeout
    while (answer := call("GET", f"{app_url}sessions/{sessionid}/turns/{turn}", token=token))[0] != 200:
        assert answer[0] == 404 and time.monotonic() < deadline, answer
        time.sleep(0.1)


def stored_answer(app_url: str, token: str, sessionid: str, turn: str, timeout: float = 20) -> str:
    """The turn's answer once the service has stored it."""
    deadline = time.monotonic() + timeout
    while (status := turn_status(app_url, token, sessionid, turn))["status"] == "pending":
        assert time.monotonic() < deadline, f"turn {turn} still pending after {timeout} s"
        time.sleep(0.2)
    assert status["status"] == "done", status
    return status["answer"]


def test_the_answer_streams_over_the_websocket_as_it_is_generated(page, streaming_url):
    sent, received = websocket_messages(page)
    posts = []
    page.on("request", lambda request: posts.append(request)
            if request.method == "POST" and request.url.startswith(streaming_url) else None)
    open_local_chat(page, streaming_url)
    watch_renderings(page)

    box = page.get_by_label("Message")
    box.fill(LONG_QUESTION)
    box.press("Enter")
    expect(texts(page).last).to_have_text(answer_to(LONG_QUESTION), timeout=STREAMED)
    # The whole text shows with the last delta; the turn is over with `done`, which empties the box.
    expect(box).to_have_value("")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()

    answer = texts(page).last.text_content()
    renderings = page.evaluate("window.__renderings")
    partial = {text for text in renderings if text and text != answer and answer.startswith(text)}
    assert len(partial) >= 2, renderings
    assert renderings[-1] == answer
    (question,) = sent
    assert question == {"action": "chat", "sessionid": question["sessionid"], "query": LONG_QUESTION,
                        "turn": question["turn"]}
    types = [message["type"] for message in received]
    assert types[0] == "accepted" and types[-1] == "done" and set(types[1:-1]) == {"delta"}
    assert "".join(message["text"] for message in received if message["type"] == "delta") == answer
    assert posts == []
    screenshot(page, "chat-page-streamed.png")


def test_stop_leaves_the_answer_which_is_stored_and_shown_when_reopened(page, streaming_url):
    sent, _ = websocket_messages(page)
    open_local_chat(page, streaming_url)
    box = page.get_by_label("Message")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_hidden()

    box.fill(LONG_QUESTION)
    box.press("Enter")
    answer = texts(page).last
    expect(answer).to_have_text(re.compile(r"^Answer \d+ to: \S"), timeout=STREAMED)  # it has begun
    stop.click()

    expect(stop).to_be_hidden()
    expect(page.locator(".message.assistant .note")).to_have_text(
        "Stopped. Open the conversation again for the whole answer.")
    expect(page.get_by_role("status")).to_have_text("")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(box).to_have_value("")
    shown = answer.text_content()
    (question,) = sent
    whole = stored_answer(streaming_url, local_user_token(streaming_url), question["sessionid"], question["turn"])
    assert whole.startswith(shown) and len(shown) < len(whole)
    expect(answer).to_have_text(shown)  # what came after Stop is not shown
    expect(conversations(page).first).to_have_attribute("aria-current", "true")  # listed, newest first

    page.reload()
    expect(texts(page)).to_have_text([LONG_QUESTION, whole])


def test_stop_without_a_websocket_leaves_the_request_which_the_service_completes(page, app_url, model, user):
    open_chat(page, app_url, user)
    box = page.get_by_label("Message")
    with model.holding_answers():
        box.fill("Stop waiting")
        with page.expect_request(re.compile(r"/chat$")) as posted:
            box.press("Enter")
        request = posted.value.post_data_json
        wait_for_turn(app_url, user.token, request["sessionid"], request["turn"])
        page.get_by_role("button", name="Stop").click()
        expect(page.locator(".message.assistant .note")).to_have_text(
            "Stopped. Open the conversation again for the whole answer.")
        expect(texts(page)).to_have_text(["Stop waiting", ""])
        expect(box).to_have_value("")
        expect(page.get_by_role("button", name="Send")).to_be_enabled()

    whole = stored_answer(app_url, user.token, request["sessionid"], request["turn"])
    page.reload()
    expect(texts(page)).to_have_text(["Stop waiting", whole])


def test_a_stream_that_fails_shows_the_error_and_a_retry_keeps_its_turn(page, streaming_url, streaming_model):
    sent, _ = websocket_messages(page)
    open_local_chat(page, streaming_url)
    box = page.get_by_label("Message")

    streaming_model.fake.fail_next(TgiError(500, "CUDA out of memory", "generation"))
    box.fill("Will this fail?")
    box.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("the model failed", timeout=STREAMED)
    expect(box).to_have_value("Will this fail?")
    expect(texts(page)).to_have_count(0)

    page.get_by_role("button", name="Send").click()
    expect(texts(page)).to_have_text(["Will this fail?", answer_to("Will this fail?")], timeout=STREAMED)
    expect(page.get_by_role("alert")).to_be_hidden()
    assert len(sent) == 2 and sent[0]["turn"] == sent[1]["turn"]


def test_a_dropped_socket_is_reopened_and_the_turn_sent_again(page, streaming_url):
    """The server side of the page's socket closes mid-answer (as API Gateway closes idle or
    old connections, 1001): the page reconnects and sends the turn again with its id; the first
    attempt is still being answered (turn_in_progress), so it asks for the turn until it is done."""
    connections = []  # per socket: (its route, what the page sent, what the server answered)

    def forward(websocket):
        server = websocket.connect_to_server()
        sent, received = [], []
        connections.append((websocket, sent, received))
        websocket.on_message(lambda message: (sent.append(json.loads(message)), server.send(message)))
        server.on_message(lambda message: (received.append(json.loads(message)), websocket.send(message)))

    page.route_web_socket(re.compile(r"^ws://"), forward)
    lookups = []
    page.on("request", lambda request: lookups.append(request.url) if "/turns/" in request.url else None)
    open_local_chat(page, streaming_url)

    box = page.get_by_label("Message")
    box.fill(LONG_QUESTION)
    box.press("Enter")
    answer = texts(page).last
    expect(answer).to_have_text(re.compile(r"^Answer \d+ to: \S"), timeout=STREAMED)
    connections[0][0].close(code=1001, reason="Going away")  # and Playwright closes the server's side

    expect(answer).to_have_text(answer_to(LONG_QUESTION), timeout=STREAMED)
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.get_by_role("status")).to_have_text("")
    assert len(connections) == 2
    signed_in = json.loads(stored_tokens(page))["id"]
    assert [urllib.parse.parse_qs(urllib.parse.urlsplit(route.url).query)["token"] for route, _, _ in connections] == [
        [signed_in], [signed_in]]  # each connection signed in with the page's current token
    (first,), (again,) = connections[0][1], connections[1][1]
    assert again == first
    assert [message["type"] for message in connections[1][2]] == ["error"]
    assert connections[1][2][0]["error"] == "turn_in_progress"
    assert lookups and all(url.endswith(f"/sessions/{first['sessionid']}/turns/{first['turn']}") for url in lookups)
    token = local_user_token(streaming_url)
    messages = get_json(f"{streaming_url}sessions/{first['sessionid']}/messages", token)["messages"]
    assert [message["content"] for message in messages] == [LONG_QUESTION, answer.text_content()]


def test_a_turn_waiting_for_a_worker_says_so_until_its_answer_comes(page, streaming_url, streaming_model):
    """When every worker is busy the service follows `accepted` with a `queued` status (its shape:
    tests/test_async_turns.py); here the socket's route adds it, as the service would."""
    def forward(websocket):
        server = websocket.connect_to_server()
        websocket.on_message(server.send)

        def relay(message):
            websocket.send(message)
            frame = json.loads(message)
            if frame["type"] == "accepted":
                websocket.send(json.dumps({"type": "status", "status": "queued", "turn": frame["turn"], "ahead": 2}))

        server.on_message(relay)

    page.route_web_socket(re.compile(r"^ws://"), forward)
    open_local_chat(page, streaming_url)
    notice = page.get_by_text("Many questions are being answered right now: yours is in line behind 2.")
    box = page.get_by_label("Message")
    with streaming_model.holding_answers():
        box.fill("Is it busy?")
        box.press("Enter")
        expect(notice).to_be_visible(timeout=STREAMED)
        expect(page.get_by_role("alert")).to_be_hidden()
    expect(texts(page).last).to_have_text(answer_to("Is it busy?"), timeout=STREAMED)
    expect(notice).to_be_hidden()


def authorizations(page) -> list[str]:
    """The Authorization header of every request the page sends to its API from now on."""
    sent = []
    page.on("request", lambda request: sent.append(request.headers.get("authorization"))
            if "/sessions" in request.url or request.url.endswith("/chat") else None)
    return sent


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def cognito_calls(page) -> list[dict]:
    """Every call the page makes to Cognito's API from now on: its action, body and headers."""
    calls = []

    def record(request):
        target = request.headers.get("x-amz-target", "")
        if target.startswith("AWSCognitoIdentityProviderService."):
            calls.append({"action": target.split(".", 1)[1], "body": request.post_data_json,
                          "content_type": request.headers["content-type"]})

    page.on("request", record)
    return calls


def stored_tokens(page) -> str | None:
    return page.evaluate("sessionStorage.getItem('llama2-chatbot.tokens')")


def test_make_run_signs_its_local_user_in_by_itself(page, streaming_url):
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    sent = authorizations(page)
    config = get_json(streaming_url + "config")
    local_user = config["sign_in"]["local_user"]["username"]

    page.goto(streaming_url)

    expect(page.get_by_text(f"Local mode: signed in as {local_user}", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in")).to_be_hidden()
    ask(page, "Who am I?")
    assert sent and all(jwt_claims(header.removeprefix("Bearer "))["email"] == local_user
                        for header in sent)
    (socket,) = sockets
    connected, configured = urllib.parse.urlsplit(socket), urllib.parse.urlsplit(config["websocket_url"])
    assert (connected.scheme, connected.netloc) == (configured.scheme, configured.netloc)
    (token,) = urllib.parse.parse_qs(connected.query)["token"]
    assert jwt_claims(token)["email"] == local_user


def test_the_sign_in_form_signs_in_with_cognito_and_says_what_went_wrong(page, app_url, user):
    calls = cognito_calls(page)
    sent = authorizations(page)
    page.goto(app_url)
    expect(page.get_by_label("Message")).to_be_hidden()

    page.get_by_label("User name").fill(user.name)
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    page.get_by_label("User name").fill("nobody-" + user.name)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    expect(page.get_by_label("Message")).to_be_hidden()
    assert stored_tokens(page) is None

    sign_in(page, app_url, user.name, user.password)
    ask(page, "Am I signed in?")

    config = get_json(app_url + "config")["sign_in"]
    assert [call["action"] for call in calls] == ["InitiateAuth"] * 3
    assert all(call["content_type"] == "application/x-amz-json-1.1" for call in calls)
    assert calls[-1]["body"] == {"ClientId": config["client_id"], "AuthFlow": "USER_PASSWORD_AUTH",
                                 "AuthParameters": {"USERNAME": user.name, "PASSWORD": user.password}}
    assert sent and all(jwt_claims(header.removeprefix("Bearer "))["email"] == user.name
                        for header in sent)
    assert jwt_claims(sent[-1].removeprefix("Bearer "))["token_use"] == "id"


def test_a_temporary_password_is_replaced_before_the_chat_opens(page, app_url, user_pool):
    name = user_pool.add_user_to_set_a_password("Temp-pass-1")
    calls = cognito_calls(page)
    page.goto(app_url)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill("Temp-pass-1")
    page.get_by_role("button", name="Sign in", exact=True).click()

    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    expect(page.get_by_label("Message")).to_be_hidden()
    page.get_by_label("New password").fill("My-own-pass-2")
    page.get_by_role("button", name="Set the password and sign in").click()

    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
    ask(page, "Is my password mine now?")
    challenge = calls[-1]
    assert challenge["action"] == "RespondToAuthChallenge"
    assert challenge["body"]["ChallengeName"] == "NEW_PASSWORD_REQUIRED"
    assert challenge["body"]["ChallengeResponses"] == {"USERNAME": name, "NEW_PASSWORD": "My-own-pass-2"}
    token = id_token(user_pool.endpoint, user_pool.client_id, name, "My-own-pass-2")  # the new password works
    assert jwt_claims(token)["email"] == name


def test_sign_out_forgets_the_tokens_and_revokes_the_refresh_token(page, app_url, user):
    calls = cognito_calls(page)
    open_chat(page, app_url, user)
    refresh_token = json.loads(stored_tokens(page))["refresh"]
    # Cognito answers a revocation with an empty object; moto's server has no RevokeToken.
    page.route(re.compile(r"^http://127\.0\.0\.1:\d+/$"), lambda route: route.fulfill(
        status=200, content_type="application/x-amz-json-1.1", body="{}")
        if route.request.headers.get("x-amz-target", "").endswith(".RevokeToken") else route.fallback())

    page.get_by_role("button", name="Sign out").click()

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Message")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(conversations(page)).to_have_count(0)
    assert stored_tokens(page) is None
    deadline = time.monotonic() + 5
    while not any(call["action"] == "RevokeToken" for call in calls) and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    (revoke,) = [call for call in calls if call["action"] == "RevokeToken"]
    assert revoke["body"] == {"ClientId": get_json(app_url + "config")["sign_in"]["client_id"], "Token": refresh_token}
    expect(page.get_by_role("alert")).to_be_hidden()
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_revocation_that_fails_is_said(page, app_url, user):
    open_chat(page, app_url, user)

    page.get_by_role("button", name="Sign out").click()  # moto's server fails RevokeToken

    expect(page.get_by_role("alert")).to_contain_text(
        "You are signed out of this page, but the sign-in service could not end the session everywhere")
    assert stored_tokens(page) is None


def test_the_id_token_is_refreshed_before_it_expires(page, app_url, user):
    page.clock.install()
    calls = cognito_calls(page)
    sent = authorizations(page)
    open_chat(page, app_url, user)
    ask(page, "Before the refresh")
    first = sent[-1]

    page.clock.fast_forward("56:00")  # moto's ID tokens last an hour; the page refreshes 5 minutes early

    deadline = time.monotonic() + 10
    while not any(call["body"].get("AuthFlow") == "REFRESH_TOKEN_AUTH" for call in calls):
        assert time.monotonic() < deadline, calls
        page.wait_for_timeout(50)
    ask(page, "After the refresh")
    assert sent[-1] != first
    assert jwt_claims(sent[-1].removeprefix("Bearer "))["email"] == user.name
    (refresh,) = [call for call in calls if call["body"].get("AuthFlow") == "REFRESH_TOKEN_AUTH"]
    assert refresh["body"]["AuthParameters"] == {"REFRESH_TOKEN": json.loads(stored_tokens(page))["refresh"]}


def test_a_401_signs_out_to_the_form(page, app_url, user):
    open_chat(page, app_url, user)
    # The service refuses a request without a valid token: send this one without any.
    page.route(re.compile(r"/chat$"), lambda route: route.continue_(headers={
        name: value for name, value in route.request.headers.items() if name.lower() != "authorization"}))
    box = page.get_by_label("Message")
    box.fill("Am I still signed in?")
    with page.expect_response(re.compile(r"/chat$")) as refused:
        box.press("Enter")

    assert refused.value.status == 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Your sign-in has ended: please sign in again.")
    assert stored_tokens(page) is None


def post_chat(app_url: str, token: str, sessionid: str, query: str) -> tuple[int, dict]:
    return call("POST", app_url + "chat", {"sessionid": sessionid, "query": query}, token=token)


def test_the_conversations_are_the_users_newest_first_in_pages(browser, page, app_url, user, user_pool):
    questions = [f"Conversation number {number}" for number in range(1, 23)]
    for question in questions:
        assert post_chat(app_url, user.token, str(uuid.uuid4()), question)[0] == 200
    with page.expect_response(re.compile(r"/sessions$")) as listed:
        open_chat(page, app_url, user)
    first_page = listed.value.json()

    expect(conversations(page)).to_have_count(len(first_page["sessions"]))
    assert first_page["next"] and len(first_page["sessions"]) < len(questions)
    expect(conversations(page)).to_have_text(questions[::-1][:len(first_page["sessions"])])
    page.get_by_role("button", name="More conversations").click()
    expect(conversations(page)).to_have_text(questions[::-1])
    expect(page.get_by_role("button", name="More conversations")).to_be_hidden()
    assert page.evaluate("localStorage.length") == 0

    with page.expect_response(re.compile(r"/sessions/[^/]+/messages$")):
        page.get_by_role("button", name="Conversation number 7", exact=True).click()
    expect(texts(page)).to_have_text(["Conversation number 7", answer_to("Conversation number 7")])
    ask(page, "And now?")
    expect(conversations(page).first).to_have_text("Conversation number 7")  # the newest activity
    expect(conversations(page)).to_have_count(len(questions))

    # Another browser of the same user lists them too; another user has none.
    elsewhere = browser.new_context().new_page()
    open_chat(elsewhere, app_url, user)
    expect(conversations(elsewhere).first).to_have_text("Conversation number 7")
    other = user_pool.add_user("Pass-word-1")
    elsewhere.get_by_role("button", name="Sign out").click()
    sign_in(elsewhere, app_url, other, "Pass-word-1")
    expect(elsewhere.get_by_text("None yet.")).to_be_visible()
    expect(conversations(elsewhere)).to_have_count(0)
    elsewhere.context.close()


def test_a_waking_model_is_a_notice_with_minutes_not_an_error(page, app_url, model, user):
    """A model scaled to zero refuses a synchronous turn (503 model_waking) while it starts."""
    open_chat(page, app_url, user)
    box = page.get_by_label("Message")
    model.fake.waking.sleep_for(60)
    try:
        box.fill("Are you awake?")
        with page.expect_response(re.compile(r"/chat$")) as refused:
            box.press("Enter")
        assert refused.value.status == 503 and refused.value.json()["error"] == "model_waking"

        expect(page.get_by_text(WAKING_NOTICE)).to_be_visible()
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(box).to_have_value("Are you awake?")
    finally:
        model.fake.waking.sleep_for(0)
    page.get_by_role("button", name="Send").click()
    expect(texts(page)).to_have_text(["Are you awake?", answer_to("Are you awake?")])
    expect(page.get_by_text("The model is starting")).to_be_hidden()


def use_up_the_rate_limit(app_url: str, token: str) -> None:
    """New turns until the service refuses one (429), with enough of the minute left for the page's."""
    for _ in range(1000):
        status, body = post_chat(app_url, token, str(uuid.uuid4()), "Filling the minute")
        if status == 200:
            continue
        assert status == 429, body
        if body["retry_after"] >= 10:
            return
        time.sleep(body["retry_after"])  # the next minute starts afresh
    raise AssertionError("no rate limit after 1000 turns")


def test_a_rate_limit_says_how_long_to_wait(page, app_url, user):
    open_chat(page, app_url, user)
    use_up_the_rate_limit(app_url, user.token)
    box = page.get_by_label("Message")
    box.fill("One too many")
    with page.expect_response(re.compile(r"/chat$")) as refused:
        box.press("Enter")

    assert refused.value.status == 429
    wait = refused.value.json()["retry_after"]
    expect(page.get_by_role("alert")).to_have_text(f"You are sending questions too quickly: wait {wait} seconds, "
                                                   "then send again.")
    expect(box).to_have_value("One too many")


def test_a_streamed_turn_says_while_the_model_wakes(page, streaming_url, streaming_model):
    """The worker waits for a model scaled to zero, saying so in `status` frames, then answers."""
    _, received = websocket_messages(page)
    open_local_chat(page, streaming_url)
    box = page.get_by_label("Message")
    # Asleep until the page says so, however long the turn takes to reach the worker; then awake,
    # for the worker's next call.
    streaming_model.fake.waking.sleep_for(600)
    try:
        box.fill("Wake up, please")
        box.press("Enter")
        notice = page.get_by_text(WAKING_NOTICE)
        expect(notice).to_be_visible(timeout=STREAMED)
        expect(page.get_by_role("status")).to_have_text("Llama 2 7B Chat is answering…")
        expect(page.get_by_role("alert")).to_be_hidden()
    finally:
        streaming_model.fake.waking.sleep_for(0)
    expect(texts(page).last).to_have_text(answer_to("Wake up, please"), timeout=POLL_SECONDS * 1000 + STREAMED)
    expect(notice).to_be_hidden()
    statuses = [message for message in received if message["type"] == "status"]
    assert statuses and all(message["status"] == "model_waking" for message in statuses)


def test_a_token_the_service_refuses_signs_out_to_the_form(page, streaming_url):
    """make run's gateway verifies tokens as API Gateway does: a tampered one gets 401."""
    open_local_chat(page, streaming_url)
    tokens = json.loads(stored_tokens(page))
    header, payload, signature = tokens["id"].split(".")
    tampered = ".".join((header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")))
    page.evaluate("tokens => sessionStorage.setItem('llama2-chatbot.tokens', tokens)",
                  json.dumps({**tokens, "id": tampered}))

    with page.expect_response(re.compile(r"/sessions$")) as refused:
        page.reload()

    assert refused.value.status == 401
    assert refused.value.request.headers["authorization"] == f"Bearer {tampered}"
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Your sign-in has ended: please sign in again.")
    assert stored_tokens(page) is None


# --- Answers as Markdown, safely; the keyboard, the phone, the dark theme and screen readers.

@contextlib.contextmanager
def answering(model, answers: dict[str, str]):
    """The fake model answers each question of `answers` with its text, the others as usual."""
    model.fake.answer_for = lambda number, question: answers.get(question, f"Answer {number} to: {question}")
    try:
        yield
    finally:
        model.fake.answer_for = None


def send(page, question: str) -> None:
    """Send `question` with the Enter key and wait until it is answered (the box is empty again)."""
    box = page.get_by_label("Message")
    box.fill(question)
    box.press("Enter")
    expect(box).to_have_value("", timeout=STREAMED)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def newest_answer(page):
    """The newest answer's rendered text."""
    return conversation(page).locator(".message.assistant .text").last


@dataclass(frozen=True)
class Chat:
    """A signed-in page's way to the model: `chalice local`, whose answers come whole from POST
    /chat, or `make run`, whose answers stream over its WebSocket."""

    url: str
    model: object
    open: object  # open(page): the chat, signed in
    token: object  # token(): an ID token of the page's user, for the test's own requests


@pytest.fixture(params=["post", "stream"])
def chat(request) -> Chat:
    if request.param == "post":
        url, user = request.getfixturevalue("app_url"), request.getfixturevalue("user")
        return Chat(url, request.getfixturevalue("model"), lambda page: open_chat(page, url, user), lambda: user.token)
    url = request.getfixturevalue("streaming_url")
    return Chat(url, request.getfixturevalue("streaming_model"), lambda page: open_local_chat(page, url),
                lambda: local_user_token(url))


MARKDOWN_QUESTION = "How do I boil an egg?"
CODE = 'def boil(egg, minutes=7):\n    return egg.cooked(minutes)  # "done" <b>\n'
MARKDOWN_ANSWER = f"""# Boiling an egg

Put the egg in **boiling** water for *seven* minutes, then in `cold` water.
See [the guide](https://example.com/eggs "Eggs") for more.

## What you need

- an egg
- a pot
  - with a lid

3. Boil the water.
4. Add the egg.

> A watched pot never boils.

| Minutes | Yolk |
| ---: | :---: |
| 6 | runny |
| 9 | firm |

```python
{CODE}```

---
That is all."""


def test_answers_show_their_markdown_and_code_also_after_a_reload(page, app_url, model, user):
    open_chat(page, app_url, user)
    with answering(model, {MARKDOWN_QUESTION: MARKDOWN_ANSWER}):
        send(page, MARKDOWN_QUESTION)

    for shown in ("sent", "reloaded"):
        rendered = newest_answer(page)
        expect(rendered.locator("h1")).to_have_text("Boiling an egg")
        expect(rendered.locator("h2")).to_have_text("What you need")
        expect(rendered.locator("p strong")).to_have_text("boiling")
        expect(rendered.locator("p em")).to_have_text("seven")
        expect(rendered.locator("p > code")).to_have_text("cold")
        link = rendered.get_by_role("link", name="the guide")
        expect(link).to_have_attribute("href", "https://example.com/eggs")
        expect(link).to_have_attribute("title", "Eggs")
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        expect(rendered.locator("> ul > li")).to_have_count(2)
        expect(rendered.locator("ul ul > li")).to_have_text(["with a lid"])
        expect(rendered.locator("ol")).to_have_attribute("start", "3")
        expect(rendered.locator("ol > li")).to_have_text(["Boil the water.", "Add the egg."])
        expect(rendered.locator("blockquote")).to_have_text("A watched pot never boils.")
        expect(rendered.locator("th")).to_have_text(["Minutes", "Yolk"])
        expect(rendered.locator("td")).to_have_text(["6", "runny", "9", "firm"])
        expect(rendered.locator("td").first).to_have_class("align-right")
        expect(rendered.locator("td").nth(1)).to_have_class("align-center")
        code = rendered.locator(".code-block")
        expect(code.locator(".language")).to_have_text("python")
        expect(code.get_by_role("button", name="Copy")).to_be_visible()
        expect(code.locator("pre > code.language-python")).to_have_text(CODE)
        expect(rendered.locator("hr")).to_have_count(1)
        expect(rendered.locator("p").last).to_have_text("That is all.")
        if shown == "sent":
            screenshot(page, "chat-page-markdown.png")
            with page.expect_response(re.compile(r"/sessions/[^/]+/messages$")):
                page.reload()
    expect(texts(page).first).to_have_text(MARKDOWN_QUESTION)


def test_copy_puts_the_code_on_the_clipboard_and_says_so(page, app_url, model, user):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url.rstrip("/"))
    open_chat(page, app_url, user)
    with answering(model, {MARKDOWN_QUESTION: MARKDOWN_ANSWER}):
        send(page, MARKDOWN_QUESTION)
    copy = newest_answer(page).get_by_role("button", name="Copy")

    copy.click()

    expect(newest_answer(page).get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    expect(page.locator("#announcer")).to_have_text(re.compile(r"Copied to the clipboard\.$"))
    expect(newest_answer(page).get_by_role("button", name="Copy")).to_be_visible(timeout=10_000)  # and back


def test_without_the_clipboard_api_copy_selects_the_code(page, app_url, model, user):
    """A page on plain http off this machine is no secure context: it has no navigator.clipboard."""
    page.add_init_script("Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined });")
    open_chat(page, app_url, user)
    with answering(model, {MARKDOWN_QUESTION: MARKDOWN_ANSWER}):
        send(page, MARKDOWN_QUESTION)

    newest_answer(page).get_by_role("button", name="Copy").click()

    expect(newest_answer(page).get_by_role("button", name="Selected: copy it")).to_be_visible()
    assert page.evaluate("getSelection().toString()") == CODE.removesuffix("\n")  # as a selection reads it
    expect(page.locator("#announcer")).to_have_text(re.compile(r"The code is selected: copy it with the keyboard\.$"))


REMOTE = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request there would still be seen
HOSTILE_QUESTION = "Show me some hostile markdown"
HOSTILE_ANSWER = f"""# Hostile

<script>window.__xss = "script tag"</script>

<img src="{REMOTE}/raw.png" onerror="window.__xss = 'onerror'">

<a href="javascript:window.__xss='raw link'">raw html link</a> and <b onmouseover="window.__xss='hover'">hover me</b>

<iframe src="{REMOTE}/frame"></iframe><style>body {{ display: none }}</style>
<svg onload="window.__xss='svg'"><circle r="5"/></svg>

[plain](javascript:window.__xss='plain')
[entity](jav&#x61;script:window.__xss='entity')
[named entity](javascript&colon;window.__xss='colon')
[case](JaVaScRiPt:window.__xss='case')
[tab](java&#9;script:window.__xss='tab')
[newline](java&#10;script:window.__xss='newline')
[spaced](<java script:window.__xss='spaced'>)
[vbscript](vbscript:msgbox)
[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)
[relative](/sessions)
[protocol relative](//127.0.0.1:9/x)
[reference link][evil]

[evil]: javascript:window.__xss='reference'

<javascript:window.__xss='autolink'>
<{REMOTE}/autolink>
{REMOTE}/linkified
Mail <someone@example.com>

![data image](data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs=)
![remote image]({REMOTE}/remote.png)

&lt;script&gt;window.__xss = "entities"&lt;/script&gt; &amp; &#60;b&#62;not bold&#60;/b&#62;

```html
<script>window.__xss = "fenced"</script>
```

```js
window.__xss = "unclosed fence";
<img src=x onerror="window.__xss='in a fence'">"""
# What an answer may hold: Markdown's elements, and the page's code block bars.
MARKDOWN_ELEMENTS = {"p", "br", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code", "pre", "blockquote",
                     "ul", "ol", "li", "a", "hr", "table", "thead", "tbody", "tr", "th", "td", "div", "span", "button"}
MARKDOWN_ATTRIBUTES = {"href", "title", "class", "start", "target", "rel", "type", "data-action"}


def page_requests(page) -> list[tuple[str, str]]:
    """Every request the page makes from now on, as (method, URL)."""
    requests = []
    page.on("request", lambda request: requests.append((request.method, request.url)))
    page.on("websocket", lambda socket: requests.append(("WEBSOCKET", socket.url)))
    return requests


def test_hostile_markdown_runs_nothing_loads_nothing_and_shows_as_text(page, chat):
    chat.open(page)
    requests = page_requests(page)
    with answering(chat.model, {HOSTILE_QUESTION: HOSTILE_ANSWER}):
        send(page, HOSTILE_QUESTION)
    rendered = newest_answer(page)

    # Nothing ran, now or when the words meant as handlers are pointed at.
    rendered.get_by_text("hover me").first.hover()
    assert page.evaluate("window.__xss") is None
    # The model's HTML is its text: no element or attribute but Markdown's.
    elements = rendered.evaluate("""(answer) => [...answer.querySelectorAll("*")].map((element) => ({
      tag: element.localName, attributes: element.getAttributeNames() }))""")
    assert {element["tag"] for element in elements} <= MARKDOWN_ELEMENTS
    assert {name for element in elements for name in element["attributes"]} <= MARKDOWN_ATTRIBUTES
    assert page.evaluate("""() => [...document.querySelectorAll("*")].flatMap((element) =>
      element.getAttributeNames().filter((name) => name.startsWith("on")))""") == []
    expect(rendered).to_contain_text('<script>window.__xss = "script tag"</script>')
    expect(rendered).to_contain_text(f'<img src="{REMOTE}/raw.png" onerror="window.__xss = \'onerror\'">')
    expect(rendered).to_contain_text("[plain](javascript:window.__xss='plain')")
    expect(rendered).to_contain_text("[entity](javascript:window.__xss='entity')")  # the entity decoded, as text
    expect(rendered).to_contain_text("<javascript:window.__xss='autolink'>")
    expect(rendered).to_contain_text('<script>window.__xss = "entities"</script> & <b>not bold</b>')
    # Links only to web addresses (also those in the model's HTML, which is text), opening apart;
    # images only as links to their address.
    links = rendered.locator("a").evaluate_all(
        "(links) => links.map((a) => [a.getAttribute('href'), a.target, a.rel, a.textContent])")
    assert links == [[href, "_blank", "noopener noreferrer", text] for href, text in [
        *((f"{REMOTE}/{path}", f"{REMOTE}/{path}") for path in ("raw.png", "frame", "autolink", "linkified")),
        (f"{REMOTE}/remote.png", "Image: remote image")]]
    expect(rendered).to_contain_text("![data image](data:image/gif;base64,")
    # Fenced code, closed or not, is code.
    expect(rendered.locator("pre code")).to_have_text([
        '<script>window.__xss = "fenced"</script>\n',
        "window.__xss = \"unclosed fence\";\n<img src=x onerror=\"window.__xss='in a fence'\">\n"])
    # Nothing was fetched but the page's own calls (the page fixture fails on any CSP violation).
    app = urllib.parse.urlsplit(chat.url)
    for method, url in requests:
        parts = urllib.parse.urlsplit(url)
        if method == "WEBSOCKET":
            assert parts.hostname == "127.0.0.1" and parts.scheme == "ws", url
        else:
            assert (parts.scheme, parts.netloc) == (app.scheme, app.netloc), url
            assert re.fullmatch(r"/(chat|sessions|sessions/[^/]+/(messages|turns/[^/]+))", parts.path), url
    assert page.evaluate("window.__xss") is None


def test_the_sanitizer_alone_keeps_only_markdowns_html(browser, app_url):
    """The second of the two locks: if markdown-it ever let HTML through, DOMPurify, as the page
    configures it, would keep only Markdown's elements and web links (and do it under the CSP's
    Trusted Types, which let only its policy write HTML). Chromium parses DOMPurify's input under
    the page's CSP, so it reports the handlers and styles in it as refused: a third lock, which
    markdown-it's escaping never gets to test (the hostile Markdown test reports nothing)."""
    context = browser.new_context()
    violations = watch_csp_violations(context)
    page = context.new_page()
    page.goto(app_url)
    dirty = ('<p style="color:red" id="x" class="evil" onclick="window.__xss=1" data-x="1" aria-label="a">para</p>'
             '<img src="x" onerror="window.__xss=2"><svg onload="window.__xss=3"></svg><math><mi>x</mi></math>'
             '<a href="javascript:window.__xss=4">js</a><a href=" JAVA&#9;SCRIPT:window.__xss=5">spelt</a>'
             '<a href="/relative">rel</a><a href="//elsewhere.example/x">proto</a><a href="mailto:a@b.c">mail</a>'
             '<a href="HTTPS://ok.example/a?b=1" target="_self">ok</a><form action="https://x.example"><input></form>'
             '<style>*{}</style><iframe srcdoc="<script>window.__xss=6</script>"></iframe>'
             '<details open ontoggle="window.__xss=7">d</details><pre><code class="language-py x">c</code></pre>'
             '<table><tr><td class="align-right">1</td><td class="align-middle">2</td></tr></table>')

    clean = page.evaluate("(dirty) => { const box = document.createElement('div');"
                          " box.append(DOMPurify.sanitize(dirty)); return box.innerHTML; }", dirty)

    assert clean == (
        '<p>para</p><a>js</a><a>spelt</a><a>rel</a><a>proto</a><a>mail</a>'
        '<a href="HTTPS://ok.example/a?b=1" target="_blank" rel="noopener noreferrer">ok</a>'
        'd<pre><code>c</code></pre>'
        '<table><tbody><tr><td class="align-right">1</td><td>2</td></tr></tbody></table>')
    assert page.evaluate("window.__xss") is None
    context.close()
    refused = {violation.split()[0] for violation in violations if " blocked " in violation}
    assert refused == {"script-src-attr", "style-src-attr", "style-src-elem"}, violations


STREAMED_QUESTION = "Tell me about lists, slowly"
STREAMED_ANSWER = """## Things to pack

Everything for a weekend away, in the order you will need it.

- a toothbrush
- a towel
- a book to read on the train
- a raincoat
- a map of the hills
- some bread and cheese
- a water bottle
- a torch

```sh
echo "packed"
```

Have a good trip."""


def test_markdown_renders_while_the_answer_streams_and_is_said_block_by_block(page, streaming_url, streaming_model):
    open_local_chat(page, streaming_url)
    page.evaluate("""() => {
      window.__states = [];
      const log = document.getElementById("log");
      new MutationObserver(() => {
        const answer = log.querySelector(".message.assistant:last-child .text");
        // The heading, once finished: once a block follows it.
        const heading = answer?.children.length > 1 ? answer.querySelector("h2") : null;
        if (heading && !window.__heading) window.__heading = heading;
        if (answer) window.__states.push({
          items: answer.querySelectorAll("li").length,
          streaming: !document.getElementById("stop").hidden,
          heading: !heading || heading === window.__heading,
        });
      }).observe(log, { subtree: true, childList: true, characterData: true });
    }""")
    with answering(streaming_model, {STREAMED_QUESTION: STREAMED_ANSWER}):
        send(page, STREAMED_QUESTION)

    rendered = newest_answer(page)
    expect(rendered.locator("li")).to_have_count(8)
    states = page.evaluate("window.__states")
    # The list grew item by item while the answer streamed, rendered as Markdown at once...
    assert {state["items"] for state in states if state["streaming"]} >= {1, 4, 7}, states
    # ...and a finished block stayed the same element: the heading was never re-created.
    assert all(state["heading"] for state in states)
    assert page.evaluate("window.__heading === document.querySelector('.message.assistant:last-child h2')")
    # Screen readers hear each block once, in order: not the question, not the conversation again.
    heard = page.locator("#announcer p").all_text_contents()
    assert heard == ["Things to pack", "Everything for a weekend away, in the order you will need it.",
                     "a toothbrush\na towel\na book to read on the train\na raincoat\na map of the hills\n"
                     "some bread and cheese\na water bottle\na torch",
                     'sh code: echo "packed"', "Have a good trip."]
    assert page.locator("#announcer").get_attribute("aria-live") == "polite"
    assert conversation(page).get_attribute("aria-live") is None
    assert page.locator("[aria-live], [role=log], [role=status], [role=alert]").evaluate_all(
        "(regions) => regions.filter((region) => region.contains(document.getElementById('log'))"
        " || document.getElementById('log').contains(region)).length") == 0

    send(page, "And now a short one")  # a new turn: only its answer is heard
    expect(page.locator("#announcer p")).to_have_text([re.compile(r"^Answer \d+ to: And now a short one$")])


SCROLLED_QUESTION = "Please write many paragraphs"
SCROLLED_ANSWER = "\n\n".join(f"Paragraph {number}: a few more words." for number in range(1, 31))


def log_scroll(page) -> dict:
    return page.locator("#log").evaluate(
        "(log) => ({ top: log.scrollTop, fromEnd: log.scrollHeight - log.scrollTop - log.clientHeight })")


def test_a_reader_at_the_end_follows_the_answer_and_one_who_scrolled_up_stays(page, streaming_url, streaming_model):
    open_local_chat(page, streaming_url)
    box = page.get_by_label("Message")
    paragraphs = conversation(page).locator(".message.assistant:last-child .text p")
    with answering(streaming_model, {SCROLLED_QUESTION: SCROLLED_ANSWER}):
        # At the end: the conversation follows the answer as it grows.
        box.fill(SCROLLED_QUESTION)
        box.press("Enter")
        expect(paragraphs).not_to_have_count(0, timeout=STREAMED)
        followed = []
        while page.get_by_role("button", name="Stop").is_visible():
            followed.append(log_scroll(page)["fromEnd"])
            page.wait_for_timeout(200)
        expect(box).to_have_value("")
        assert followed and all(distance < 40 for distance in followed), followed
        expect(paragraphs.last).to_have_text("Paragraph 30: a few more words.")
        expect(paragraphs.last).to_be_in_viewport()

        # Scrolled up: the answer grows below, and the reader stays where they are.
        box.fill(SCROLLED_QUESTION)
        box.press("Enter")
        expect(paragraphs.nth(2)).to_be_attached(timeout=STREAMED)
        page.locator("#log").evaluate("(log) => { log.scrollTop = 100; }")
        expect(box).to_have_value("", timeout=STREAMED)
    assert log_scroll(page)["top"] == 100
    expect(paragraphs).to_have_count(30)
    expect(paragraphs.last).not_to_be_in_viewport()


def focused(page) -> dict:
    """The focused element: its name as a person would say it, and its focus outline."""
    return page.evaluate("""() => {
      const element = document.activeElement, style = getComputedStyle(element);
      const name = element.getAttribute("aria-label") || element.id === "log" && "Conversation"
                   || element.labels?.[0]?.textContent || element.textContent.trim().slice(0, 40);
      return { tag: element.localName, name,
               outline: style.outlineStyle, width: parseFloat(style.outlineWidth) };
    }""")


def test_the_keyboard_alone_sends_copies_stops_and_reaches_every_control(page, app_url, model, user):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url.rstrip("/"))
    open_chat(page, app_url, user)
    box = page.get_by_label("Message")
    box.focus()
    with answering(model, {MARKDOWN_QUESTION: MARKDOWN_ANSWER}):
        page.keyboard.type("How do I boil")
        page.keyboard.press("Shift+Enter")  # a new line, not sent
        expect(box).to_have_value("How do I boil\n")
        page.keyboard.press("Backspace")
        page.keyboard.type(" an egg?")
        page.keyboard.press("Enter")
        expect(newest_answer(page).locator("h1")).to_have_text("Boiling an egg", timeout=STREAMED)
    expect(box).to_be_focused()
    expect(conversations(page)).to_have_text([MARKDOWN_QUESTION])  # listed after the turn

    # Tab goes round every control, each visibly focused.
    seen = []
    for _ in range(40):
        page.keyboard.press("Tab")
        now = focused(page)
        if now["tag"] == "body":  # past the last control, before the first again
            continue
        assert now["outline"] != "none" and now["width"] >= 2, now
        seen.append(now["name"])
        if now["name"] == "Message" and len(seen) > 1:
            break
    for control in ("Send", "Sign out", "New chat", MARKDOWN_QUESTION, f"Delete conversation: {MARKDOWN_QUESTION}",
                    "Conversation", "the guide", "Copy", "Message"):
        assert control in seen, (control, seen)
    assert seen.index("Conversation") < seen.index("the guide") < seen.index("Copy") < seen.index("Message")

    # Copy with Enter, from the keyboard.
    while focused(page)["name"] != "Copy":
        page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(newest_answer(page).get_by_role("button", name="Copied")).to_be_focused()
    assert page.evaluate("navigator.clipboard.readText()") == CODE

    # Escape stops an answer.
    box.focus()
    with model.holding_answers():
        page.keyboard.type("Stop this one")
        with page.expect_request(re.compile(r"/chat$")) as posted:
            page.keyboard.press("Enter")
        request = posted.value.post_data_json
        wait_for_turn(app_url, user.token, request["sessionid"], request["turn"])
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator(".message.assistant .note")).to_have_text(
            "Stopped. Open the conversation again for the whole answer.")
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(box).to_be_focused()


WIDE_QUESTION = "Show me something wide"
WIDE_ANSWER = ("```text\n" + "a_very_long_line_of_code_that_does_not_wrap " * 6 + "\n```\n\n"
               "| " + " | ".join(f"column {number}" for number in range(1, 13)) + " |\n"
               "|" + " --- |" * 12 + "\n| " + " | ".join(str(number) for number in range(1, 13)) + " |\n")


def test_a_phone_keeps_the_chat_on_screen_and_the_list_behind_a_button(page, app_url, model, user):
    page.set_viewport_size({"width": 390, "height": 844})
    open_chat(page, app_url, user)
    for number in range(1, 4):
        ask(page, f"Question {number}: tell me something about the number {number}, in a few words.")
    with answering(model, {WIDE_QUESTION: WIDE_ANSWER}):
        send(page, WIDE_QUESTION)
    toggle = page.get_by_role("button", name="Conversations")
    nav = page.get_by_role("navigation", name="Conversations")

    # The chat has the screen: the list waits behind its button, and nothing is wider than the phone.
    expect(nav).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(newest_answer(page).locator(".code-block")).to_be_in_viewport()
    expect(page.get_by_label("Message")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "chat-page-phone.png")

    # The list opens over the chat, with the focus in it; Escape closes it and the focus comes back.
    toggle.click()
    expect(nav).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(conversations(page).first).to_be_focused()
    expect(page.get_by_role("button", name="Delete conversation: Question 1")).to_be_in_viewport()
    expect(page.get_by_label("Message")).to_be_in_viewport()  # still there, under the list
    screenshot(page, "chat-page-phone-list.png")
    page.keyboard.press("Escape")
    expect(nav).to_be_hidden()
    expect(toggle).to_be_focused()

    # Opening a conversation from the list closes it, as does a new chat.
    toggle.click()
    with page.expect_response(re.compile(r"/sessions/[^/]+/messages$")):
        conversations(page).first.click()
    expect(nav).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(texts(page).last).to_be_in_viewport()


# The contrast WCAG asks of text (AA): 4.5 to 1.
CONTRAST = """(element) => {
  const rgb = (color) => color.match(/[\\d.]+/g).map(Number);
  const luminance = (color) => {
    const [r, g, b] = rgb(color).slice(0, 3).map((value) => {
      value /= 255;
      return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let ground = element;
  while (ground && (rgb(getComputedStyle(ground).backgroundColor)[3] ?? 1) === 0) ground = ground.parentElement;
  const background = ground ? getComputedStyle(ground).backgroundColor : "rgb(255, 255, 255)";
  const [lighter, darker] = [luminance(getComputedStyle(element).color), luminance(background)].sort((a, b) => b - a);
  return { ratio: (lighter + 0.05) / (darker + 0.05), background: luminance(background) };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_theme_follows_the_system_and_every_text_is_readable(page, app_url, model, user, scheme):
    page.emulate_media(color_scheme=scheme)
    open_chat(page, app_url, user)
    with answering(model, {MARKDOWN_QUESTION: MARKDOWN_ANSWER}):
        send(page, MARKDOWN_QUESTION)
    rendered = newest_answer(page)

    ground = page.locator("body").evaluate(CONTRAST)["background"]
    assert ground < 0.05 if scheme == "dark" else ground > 0.8
    for element in (rendered.locator("p").first, rendered.locator("h1"), rendered.get_by_role("link", name="the guide"),
                    rendered.locator("blockquote p"), rendered.locator("th").first, rendered.locator("p > code"),
                    rendered.locator("pre code"), rendered.locator(".code-head .language"),
                    rendered.get_by_role("button", name="Copy"), conversation(page).locator(".who").first,
                    texts(page).first, page.get_by_role("button", name="Send"), conversations(page).first,
                    page.get_by_text(re.compile("^Signed in as"))):
        contrast = element.evaluate(CONTRAST)
        assert contrast["ratio"] >= 4.5, (element, contrast)
    screenshot(page, f"chat-page-desktop-{scheme}.png")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(rendered.locator(".code-block")).to_be_attached()
    rendered.locator(".code-block").scroll_into_view_if_needed()
    screenshot(page, f"chat-page-phone-{scheme}.png")
    page.get_by_role("button", name="Conversations").click()
    screenshot(page, f"chat-page-phone-list-{scheme}.png")


# --- Regenerate and edit the last turn, its versions, rename, search, export and feedback; the
# WebSocket signed in again when its token has expired.

SERVED = 20_000  # ms a request to the local servers may take on a busy machine, in expect()


def shown_session(page) -> str:
    """The id of the conversation the page shows (once it has a turn)."""
    return page.evaluate("sessionStorage.getItem('llama2-chatbot.current')")


def listed_messages(url: str, token: str, sessionid: str) -> list[dict]:
    return get_json(f"{url}sessions/{sessionid}/messages", token)["messages"]


def answers(page):
    """The conversation's answers, oldest first."""
    return conversation(page).locator(".message.assistant")


def version_count(page):
    """The newest answer's version counter, as it shows it ("2/2")."""
    return answers(page).last.locator(".versions .count > [aria-hidden=true]")


def posted_chats(page) -> list[dict]:
    """The body of every POST /chat the page sends from now on, in order."""
    bodies = []
    page.on("request", lambda request: bodies.append(request.post_data_json)
            if request.method == "POST" and request.url.endswith("/chat") else None)
    return bodies


def reload_conversation(page) -> None:
    with page.expect_response(re.compile(r"/sessions/[^/]+/messages$")) as loaded:
        page.reload()
    assert loaded.value.ok


def test_regenerate_replaces_the_last_answer_which_stays_an_earlier_version(page, chat):
    chat.open(page)
    send(page, "First question")
    send(page, "Second question")
    kept_turn, replaced = (answer.get_attribute("data-turn") for answer in answers(page).all())
    kept, earlier = (answer.text_content() for answer in texts(page).all()[1::2])
    regenerate = page.get_by_role("button", name="Regenerate the answer")
    expect(regenerate).to_have_count(1)  # on the last answer alone, as Edit is on the last question
    expect(answers(page).last.get_by_role("button", name="Regenerate the answer")).to_be_visible()
    expect(page.get_by_role("button", name="Edit the question")).to_have_count(1)
    expect(answers(page).last.locator(".versions")).to_be_hidden()  # one version so far

    regenerate.click()

    expect(version_count(page)).to_have_text("2/2", timeout=STREAMED)
    expect(texts(page)).to_have_text(["First question", kept, "Second question", answer_to("Second question")])
    regenerated = newest_answer(page).text_content()
    assert regenerated != earlier
    turn = answers(page).last.get_attribute("data-turn")
    assert turn not in (kept_turn, replaced)
    messages = listed_messages(chat.url, chat.token(), shown_session(page))
    assert [(message["turn"], message["content"], message.get("replaces")) for message in messages] == [
        (kept_turn, "First question", None), (kept_turn, kept, None),
        (turn, "Second question", [replaced]), (turn, regenerated, [replaced])]
    expect(page.get_by_role("button", name="Regenerate the answer")).to_have_count(1)

    # The earlier version is a click away, and back; it can be read, not rated.
    older, newer = page.get_by_role("button", name="Previous version"), page.get_by_role("button", name="Next version")
    expect(newer).to_have_attribute("aria-disabled", "true")
    older.click()
    expect(newest_answer(page)).to_have_text(earlier)
    expect(version_count(page)).to_have_text("1/2")
    expect(older).to_have_attribute("aria-disabled", "true")
    expect(answers(page).last.get_by_role("button", name="Good answer")).to_be_hidden()
    newer.click()
    expect(newest_answer(page)).to_have_text(regenerated)
    expect(answers(page).last.get_by_role("button", name="Good answer")).to_be_visible()

    # After a reload, from the listing; the earlier version read from the service by its turn id.
    reload_conversation(page)
    expect(texts(page)).to_have_text(["First question", kept, "Second question", regenerated])
    expect(version_count(page)).to_have_text("2/2")
    with page.expect_response(re.compile(rf"/sessions/[^/]+/turns/{replaced}$")) as read:
        older.click()
    assert read.value.json()["replaced_by"] == turn
    expect(newest_answer(page)).to_have_text(earlier)
    expect(answers(page).last.locator(".versions")).to_contain_text("Version 1 of 2")


def test_edit_sends_the_changed_question_in_place_of_the_last_and_a_retry_keeps_its_turn(page, app_url, model, user):
    open_chat(page, app_url, user)
    posts = posted_chats(page)
    send(page, "What is the capital of Frnace?")
    replaced = answers(page).last.get_attribute("data-turn")
    earlier = newest_answer(page).text_content()
    edit = page.get_by_role("button", name="Edit the question")
    field = page.get_by_role("textbox", name="Edit your question")

    # Escape leaves the question as it was, and the focus where it was.
    edit.focus()
    page.keyboard.press("Enter")
    expect(field).to_be_focused()
    expect(field).to_have_value("What is the capital of Frnace?")
    page.keyboard.press("Escape")
    expect(field).to_have_count(0)
    expect(edit).to_be_focused()
    expect(texts(page)).to_have_text(["What is the capital of Frnace?", earlier])

    # A send that fails leaves the conversation as it was, and the edited question ready to send again.
    edit.click()
    field.fill("What is the capital of France?")
    model.fake.fail_next(TgiError(500, "CUDA out of memory", "generation"))
    with page.expect_response(re.compile(r"/chat$")) as failed:
        field.press("Enter")
    assert failed.value.status == 502
    expect(page.get_by_role("alert")).to_contain_text("the model failed (status 500)")
    expect(texts(page)).to_have_text(["What is the capital of Frnace?", earlier])
    expect(field).to_have_value("What is the capital of France?")
    expect(field).to_be_focused()
    screenshot(page, "chat-page-edit.png")

    field.press("Enter")  # the retry

    expect(version_count(page)).to_have_text("2/2", timeout=STREAMED)
    expect(texts(page)).to_have_text(["What is the capital of France?", answer_to("What is the capital of France?")])
    expect(page.get_by_role("alert")).to_be_hidden()
    first, attempt, retry = posts
    assert attempt == retry == {"sessionid": first["sessionid"], "query": "What is the capital of France?",
                                "turn": attempt["turn"], "replaces": replaced}
    assert attempt["turn"] != first["turn"] and "replaces" not in first
    edited = newest_answer(page).text_content()
    messages = listed_messages(app_url, user.token, first["sessionid"])
    assert [(message["turn"], message["content"], message["replaces"]) for message in messages] == [
        (retry["turn"], "What is the capital of France?", [replaced]), (retry["turn"], edited, [replaced])]

    reload_conversation(page)
    expect(texts(page)).to_have_text(["What is the capital of France?", edited])
    page.get_by_role("button", name="Previous version").click()
    expect(newest_answer(page)).to_have_text(earlier, timeout=SERVED)
    expect(version_count(page)).to_have_text("1/2")
    # The earlier answer under the question it answered; the current one under its own again.
    expect(texts(page)).to_have_text(["What is the capital of Frnace?", earlier])
    page.get_by_role("button", name="Next version").click()
    expect(texts(page)).to_have_text(["What is the capital of France?", edited])


def test_a_conversation_is_renamed_in_the_list_from_the_keyboard(page, app_url, user):
    for question in ("Plans for the weekend", "Pasta recipes"):
        assert post_chat(app_url, user.token, str(uuid.uuid4()), question)[0] == 200
    open_chat(page, app_url, user)
    expect(conversations(page)).to_have_text(["Pasta recipes", "Plans for the weekend"], timeout=SERVED)
    patches = []
    page.on("request", lambda request: patches.append(request.post_data_json) if request.method == "PATCH" else None)

    page.get_by_role("button", name="Rename conversation: Plans for the weekend").focus()
    page.keyboard.press("Enter")
    field = page.get_by_role("textbox", name=re.compile(r"^New title for the conversation Plans for the weekend"))
    expect(field).to_be_focused()
    expect(field).to_have_value("Plans for the weekend")
    expect(field).to_have_attribute("maxlength", "120")
    page.keyboard.type("  A weekend in Rome ")  # the title is selected: typing replaces it
    with page.expect_response(lambda response: response.request.method == "PATCH") as renamed:
        page.keyboard.press("Enter")

    assert renamed.value.status == 200 and renamed.value.json()["title"] == "A weekend in Rome"
    expect(conversations(page)).to_have_text(["Pasta recipes", "A weekend in Rome"])
    expect(page.get_by_role("button", name="Rename conversation: A weekend in Rome")).to_be_focused()
    assert [entry["title"] for entry in get_json(app_url + "sessions", user.token)["sessions"]] == [
        "Pasta recipes", "A weekend in Rome"]

    # Escape leaves the title as it was, and sends nothing.
    page.keyboard.press("Enter")
    page.keyboard.type("Never mind")
    page.keyboard.press("Escape")
    expect(conversations(page)).to_have_text(["Pasta recipes", "A weekend in Rome"])
    expect(page.get_by_role("button", name="Rename conversation: A weekend in Rome")).to_be_focused()
    assert patches == [{"title": "A weekend in Rome"}]

    # The conversation shows its new title, also after a reload.
    conversations(page).last.click()
    expect(page.get_by_role("heading", name="A weekend in Rome")).to_be_visible(timeout=SERVED)
    reload_conversation(page)
    expect(conversations(page)).to_have_text(["Pasta recipes", "A weekend in Rome"], timeout=SERVED)
    expect(page.get_by_role("heading", name="A weekend in Rome")).to_be_visible()


def test_the_search_box_lists_the_matching_conversations_in_pages_and_clears_back(page, app_url, user):
    trips = [f"Trip number {number}" for number in range(1, 24)]  # more than a page of the listing
    for question in [*trips, "Pasta recipes", "Bread recipes"]:
        assert post_chat(app_url, user.token, str(uuid.uuid4()), question)[0] == 200
    with page.expect_response(re.compile(r"/sessions$")) as listed:
        open_chat(page, app_url, user)
    page_size = len(listed.value.json()["sessions"])
    newest_first = ["Bread recipes", "Pasta recipes", *trips[::-1]]
    expect(conversations(page)).to_have_text(newest_first[:page_size], timeout=SERVED)
    search = page.get_by_role("searchbox", name="Search conversations")
    more = page.get_by_role("button", name="More conversations")

    with page.expect_response(re.compile(r"/sessions\?q=trip$")) as searched:
        search.press_sequentially("trip", delay=30)
    assert searched.value.ok and searched.value.json()["next"]
    expect(conversations(page)).to_have_text(trips[::-1][:page_size], timeout=SERVED)
    with page.expect_response(re.compile(r"/sessions\?q=trip&after=")):
        more.click()
    expect(conversations(page)).to_have_text(trips[::-1], timeout=SERVED)
    expect(more).to_be_hidden()

    search.fill("recipes PASTA")
    expect(conversations(page)).to_have_text(["Pasta recipes"], timeout=SERVED)
    search.fill("Lisbon")
    expect(page.get_by_text("No conversation’s title holds these words.")).to_be_visible(timeout=SERVED)
    expect(conversations(page)).to_have_count(0)

    search.press("Escape")  # empties the box: every conversation again
    expect(search).to_have_value("")
    expect(conversations(page)).to_have_text(newest_first[:page_size], timeout=SERVED)
    expect(more).to_be_visible()


def test_export_saves_the_conversation_as_markdown_and_as_json(page, app_url, user):
    open_chat(page, app_url, user)
    send(page, "What is Rome known for?")
    send(page, "And Paris?")
    sessionid = shown_session(page)
    shown = texts(page).all_text_contents()
    export = page.get_by_role("button", name="Export")
    markdown = page.get_by_role("button", name="Markdown (.md)")
    expect(page.get_by_role("heading", name="What is Rome known for?")).to_be_visible(timeout=SERVED)

    # The menu from the keyboard: it opens with the focus in it, Escape closes it.
    export.focus()
    page.keyboard.press("Enter")
    expect(export).to_have_attribute("aria-expanded", "true")
    expect(markdown).to_be_focused()
    screenshot(page, "chat-page-export.png")
    page.keyboard.press("Escape")
    expect(markdown).to_be_hidden()
    expect(export).to_be_focused()

    export.click()
    with page.expect_download() as saved:
        markdown.click()
    assert saved.value.suggested_filename == f"{sessionid}.md"
    text = Path(saved.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# What is Rome known for?\n")
    assert [line.split(",")[0] for line in text.splitlines() if line.startswith("## ")] == [
        "## You", "## Assistant", "## You", "## Assistant"]
    assert all(f"\n{message}\n" in text for message in shown)
    expect(markdown).to_be_hidden()

    export.click()
    with page.expect_download() as saved:
        page.get_by_role("button", name="JSON (.json)").click()
    assert saved.value.suggested_filename == f"{sessionid}.json"
    document = json.loads(Path(saved.value.path()).read_text(encoding="utf-8"))
    assert document["sessionid"] == sessionid and document["title"] == "What is Rome known for?"
    assert [(turn["question"], turn["answer"]) for turn in document["turns"]] == [
        (shown[0], shown[1]), (shown[2], shown[3])]
    expect(page.get_by_role("alert")).to_be_hidden()


def test_feedback_is_given_changed_commented_and_taken_back_also_after_a_reload(page, app_url, user):
    open_chat(page, app_url, user)
    send(page, "Rate me")
    send(page, "Rate me too")
    sessionid = shown_session(page)
    answer = answers(page).first
    up, down = answer.get_by_role("button", name="Good answer"), answer.get_by_role("button", name="Bad answer")
    comment_button = answer.get_by_role("button", name="Add a comment")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(comment_button).to_be_hidden()  # a comment goes with a rating

    def feedback() -> list:
        return [message.get("feedback") for message in listed_messages(app_url, user.token, sessionid)
                if message["role"] == "assistant"]

    with page.expect_response(lambda response: response.request.method == "PUT") as given:
        up.click()
    assert given.value.request.post_data_json == {"rating": "up"}
    expect(up).to_have_attribute("aria-pressed", "true")
    assert [rated and rated["rating"] for rated in feedback()] == ["up", None]

    # Another thumb changes it.
    with page.expect_response(lambda response: response.request.method == "PUT"):
        down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")
    assert [rated and rated["rating"] for rated in feedback()] == ["down", None]

    # A comment, counted as it is typed (in characters as the service counts them), 1000 at most.
    comment_button.click()
    field = answer.get_by_role("textbox", name="Your comment on this answer (optional)")
    counter = answer.locator(".counter")
    send_comment = answer.get_by_role("button", name="Send comment")
    expect(field).to_be_focused()
    expect(counter).to_have_text("0/1000")
    field.press_sequentially("Too short")
    expect(counter).to_have_text("9/1000")
    field.fill("x" * 1001)
    expect(counter).to_have_text("1001/1000: 1 too many")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(send_comment).to_be_disabled()
    field.fill("🙂" * 1000)  # 2000 UTF-16 code units, 1000 characters
    expect(counter).to_have_text("1000/1000")
    expect(send_comment).to_be_enabled()
    with page.expect_response(lambda response: response.request.method == "PUT") as commented:
        send_comment.click()
    assert commented.value.status == 200
    field.wait_for(state="detached")
    expect(answer.locator(".feedback-note")).to_have_text("Your comment: " + "🙂" * 1000)
    expect(answer.get_by_role("button", name="Edit comment")).to_be_focused()

    answer.get_by_role("button", name="Edit comment").click()
    expect(field).to_have_value("🙂" * 1000)
    field.fill("Too short, and it missed the point.")
    with page.expect_response(lambda response: response.request.method == "PUT") as commented:
        send_comment.click()
    assert commented.value.request.post_data_json == {"rating": "down",
                                                      "comment": "Too short, and it missed the point."}
    expect(answer.locator(".feedback-note")).to_have_text("Your comment: Too short, and it missed the point.")
    screenshot(page, "chat-page-feedback.png")

    # After a reload, as given.
    reload_conversation(page)
    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(answer.locator(".feedback-note")).to_have_text("Your comment: Too short, and it missed the point.")
    expect(answers(page).last.get_by_role("button", name="Bad answer")).to_have_attribute("aria-pressed", "false")

    # The pressed thumb again takes the rating, and its comment, back.
    with page.expect_response(lambda response: response.request.method == "DELETE") as taken_back:
        down.click()
    assert taken_back.value.json()["feedback"] is None
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(answer.locator(".feedback-note")).to_be_hidden()
    assert feedback() == [None, None]
    reload_conversation(page)
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(up).to_have_attribute("aria-pressed", "false")


def connection_ids(dynalite_url: str) -> set[str]:
    """The WebSocket connections make run's table holds (their items' partition keys)."""
    dynamodb = boto3.client("dynamodb", endpoint_url=dynalite_url)
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=local_table_name(), ProjectionExpression="#key", ExpressionAttributeNames={"#key": PARTITION_KEY},
        FilterExpression="begins_with(#key, :prefix)", ExpressionAttributeValues={":prefix": {"S": CONNECTION_PREFIX}})
    return {item[PARTITION_KEY]["S"] for page in pages for item in page["Items"]}


def expire_connection(dynalite_url: str, key: str) -> None:
    """The connection's access ends now, as when the token it connected with expires."""
    boto3.client("dynamodb", endpoint_url=dynalite_url).update_item(
        TableName=local_table_name(), Key={PARTITION_KEY: {"S": key}, SORT_KEY: {"S": CONNECTION_SORT_KEY}},
        UpdateExpression="SET #expires = :now", ExpressionAttributeNames={"#expires": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":now": {"N": str(int(time.time()))}})


def test_a_socket_whose_token_expired_is_signed_in_again_and_the_turn_sent_once_more(page, streaming_url,
                                                                                      dynalite_url):
    sockets = []  # per socket: its URL, what the page sent on it, what it received

    def watch(websocket):
        sent, received = [], []
        sockets.append((websocket, sent, received))
        websocket.on("framesent", lambda payload: sent.append(json.loads(payload)))
        websocket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    page.on("websocket", watch)
    calls = cognito_calls(page)
    before = connection_ids(dynalite_url)
    open_local_chat(page, streaming_url)
    deadline = time.monotonic() + 30
    while not (opened := connection_ids(dynalite_url) - before):  # the page connects when the chat opens
        assert time.monotonic() < deadline, "the page's socket never connected"
        time.sleep(0.2)
    (connection,) = opened
    expire_connection(dynalite_url, connection)

    box = page.get_by_label("Message")
    box.fill("Am I still connected?")
    box.press("Enter")

    expect(texts(page)).to_have_text(["Am I still connected?", answer_to("Am I still connected?")], timeout=STREAMED)
    expect(box).to_have_value("")
    expect(page.get_by_role("alert")).to_be_hidden()
    assert len(sockets) == 2
    (refused, asked, told), (_, asked_again, answered) = sockets
    assert asked_again == asked and len(asked) == 1
    assert [message["error"] for message in told] == ["unauthorized"] and told[0]["turn"] == asked[0]["turn"]
    assert refused.is_closed()
    assert [message["type"] for message in answered][0] == "accepted" and answered[-1]["type"] == "done"
    # Signed in again with a refreshed token, once.
    assert [call["body"]["AuthFlow"] for call in calls].count("REFRESH_TOKEN_AUTH") == 1
    first, second = (urllib.parse.parse_qs(urllib.parse.urlsplit(websocket.url).query)["token"][0]
                     for websocket, _, _ in sockets)
    assert second != first and second == json.loads(stored_tokens(page))["id"]
    messages = listed_messages(streaming_url, local_user_token(streaming_url), asked[0]["sessionid"])
    assert [message["content"] for message in messages] == ["Am I still connected?", texts(page).last.text_content()]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_conversations_and_answers_controls_are_readable_in_both_themes_and_on_a_phone(page, app_url, user,
                                                                                            scheme):
    page.emulate_media(color_scheme=scheme)
    open_chat(page, app_url, user)
    send(page, "What should I pack for a weekend in the hills?")
    page.get_by_role("button", name="Regenerate the answer").click()
    expect(version_count(page)).to_have_text("2/2", timeout=STREAMED)
    answer = answers(page).last
    with page.expect_response(lambda response: response.request.method == "PUT"):
        answer.get_by_role("button", name="Good answer").click()
    answer.get_by_role("button", name="Add a comment").click()
    answer.get_by_role("textbox", name="Your comment on this answer (optional)").fill("Useful, thanks.")
    with page.expect_response(lambda response: response.request.method == "PUT"):
        answer.get_by_role("button", name="Send comment").click()
    answer.get_by_role("button", name="Edit comment").click()
    answer.get_by_role("textbox", name="Your comment on this answer (optional)").fill("x" * 1001)
    expect(answer.locator(".counter")).to_have_text("1001/1000: 1 too many")

    texts_to_read = [page.get_by_role("heading", name="What should I pack"), page.get_by_role("button", name="Export"),
                     answer.locator(".versions .count"), answer.get_by_role("button", name="Regenerate the answer"),
                     answer.get_by_role("button", name="Edit comment"), answer.locator(".feedback-note"),
                     answer.locator(".counter"), page.get_by_role("button", name="Edit the question"),
                     page.get_by_role("searchbox", name="Search conversations")]
    icons_to_see = [answer.get_by_role("button", name="Good answer"), answer.get_by_role("button", name="Bad answer"),
                    page.get_by_role("button", name="Previous version"),
                    page.get_by_role("button", name=re.compile("^Rename conversation"))]
    for element, least in [*((element, 4.5) for element in texts_to_read), *((element, 3) for element in icons_to_see)]:
        contrast = element.evaluate(CONTRAST)
        assert contrast["ratio"] >= least, (element, contrast)
    screenshot(page, f"chat-page-controls-desktop-{scheme}.png")

    page.set_viewport_size({"width": 390, "height": 844})
    answer.get_by_role("button", name="Regenerate the answer").scroll_into_view_if_needed()
    expect(answer.get_by_role("button", name="Regenerate the answer")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Export")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, f"chat-page-controls-phone-{scheme}.png")
    page.get_by_role("button", name="Conversations").click()
    page.get_by_role("button", name=re.compile("^Rename conversation")).click()
    expect(page.get_by_role("textbox", name=re.compile("^New title for the conversation"))).to_be_in_viewport()
    screenshot(page, f"chat-page-phone-rename-{scheme}.png")
