"""The web chat page in a real browser: Debian's Chromium, driven by Playwright, against
`chalice local` (stage `local`) with dynalite and the fake model served over HTTP.

Playwright's own browser download is not reachable here, so the test needs the `chromium`
package's binary; screenshots go to test-artifacts/ for a person to look at.
"""

import json
import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest
from playwright.sync_api import expect, sync_playwright

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_TOTAL_TOKENS
from local.net import free_port
from local.table import ensure_table, local_table_name
from tests.fake_endpoint import HTML_REPLY, FakeEndpoint, model_error
from tests.fake_model_server import serving
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


@pytest.fixture(scope="module")
def app_url(model, dynalite_url):
    """`chalice local` as `make run` starts it, on the local DynamoDB and the fake model."""
    ensure_table(boto3.client("dynamodb", endpoint_url=dynalite_url), local_table_name())
    chalice = shutil.which("chalice", path=os.path.dirname(sys.executable))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [chalice, "local", "--stage", "local", "--no-autoreload", "--host", "127.0.0.1", "--port", str(port)]
    env = {"AWS_ENDPOINT_URL_DYNAMODB": dynalite_url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": model.url}
    with running(command, url, env):
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh profile (empty localStorage) per test; an uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    yield page
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def texts(page):
    """The conversation's messages, as the locator of their texts."""
    return page.get_by_role("log", name="Conversation").locator(".message p")


def answer_to(question: str) -> re.Pattern:
    return re.compile(rf"^Answer \d+ to: {re.escape(question)}$")


def ask(page, question: str) -> None:
    """Send `question` with the Enter key and wait for its answer."""
    box = page.get_by_label("Message")
    box.fill(question)
    box.press("Enter")
    expect(texts(page).last).to_have_text(answer_to(question))
    expect(box).to_have_value("")


def conversations(page):
    """The buttons that open this browser's past conversations, newest first."""
    return page.get_by_role("navigation", name="Conversations").locator("button.open")


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)


def test_two_turns_are_answered_and_restored_after_a_reload(page, app_url, model):
    page.goto(app_url)
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
        expect(page.get_by_role("status")).to_have_text("Llama 2 is answering…")
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


def test_new_chat_open_and_delete(page, app_url):
    page.goto(app_url)
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
    with urllib.request.urlopen(deleted.value.url + "/messages") as response:
        assert json.load(response)["messages"] == []

    page.get_by_role("button", name="Delete conversation: first chat").click()
    expect(conversations(page)).to_have_count(0)
    expect(texts(page)).to_have_count(0)  # the open one was deleted: a new chat begins


def test_html_in_messages_is_shown_as_text(page, app_url):
    page.goto(app_url)
    page.get_by_label("Message").fill("<b>Some</b> html please")
    page.get_by_label("Message").press("Enter")

    expect(texts(page)).to_have_text(["<b>Some</b> html please", HTML_REPLY])
    log = page.get_by_role("log", name="Conversation")
    expect(log.locator("img, b")).to_have_count(0)
    assert page.evaluate("window.__xss") is None


def test_a_failed_turn_shows_the_error_and_keeps_the_text(page, app_url, model):
    page.goto(app_url)
    box = page.get_by_label("Message")
    model.fake.fail_next(model_error(500, {"error": "CUDA out of memory", "error_type": "generation"}))

    box.fill("Please keep me")
    with page.expect_response(re.compile(r"/chat$")) as failed:
        box.press("Enter")
    assert failed.value.status == 502
    expect(page.get_by_role("alert")).to_contain_text("the model failed (status 500)")
    expect(box).to_have_value("Please keep me")
    expect(box).to_be_editable()
    expect(texts(page)).to_have_count(0)
    expect(conversations(page)).to_have_count(0)

    page.get_by_role("button", name="Send").click()
    expect(texts(page)).to_have_text(["Please keep me", answer_to("Please keep me")])
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(box).to_have_value("")


@pytest.mark.parametrize("stage_path", ["api", "api/"])
def test_the_page_works_under_an_api_gateway_stage_prefix(page, app_url, stage_path):
    # Serve the app under /api, as API Gateway does, by rewriting the browser's requests.
    page.route(re.compile(r"/api(/|$)"), lambda route: route.fulfill(
        response=route.fetch(url=route.request.url.replace("/api", "", 1))))
    page.goto(app_url + stage_path)

    with page.expect_request(app_url + "api/chat"):
        ask(page, "Where am I?")


def test_a_phone_sized_screen_shows_the_newest_message(page, app_url):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(app_url)
    for number in range(1, 5):
        ask(page, f"Question {number}: tell me something about the number {number}, in a few words.")

    expect(texts(page).last).to_be_in_viewport()
    expect(page.get_by_label("Message")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Delete conversation: Question 1")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "chat-page-phone.png")
