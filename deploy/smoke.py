"""`make smoke STAGE=dev`: proves a stage works end to end, as its users use it, and leaves nothing.

    python -m deploy.smoke --stage dev                  # the stage `chalice deploy` recorded
    python -m deploy.smoke --url URL --user-pool-id ID  # any running service (make run too)

A user of its own (`smoke+<random>@example.com`, created in the stage's pool with a random
password that is never printed or written, and deleted at the end) signs in through Cognito as
the page does, then each check in `CHECKS` runs in order, one line each with its latency: the
page and its headers, GET /config, a REST turn and a follow-up using the history, regenerating
it, feedback, a streamed WebSocket turn, an async turn through the queue and the worker, the
messages, renaming, searching and exporting, the sessions listing, DELETE, and a refusal without
a token. The
conversations it makes are deleted (the DELETE check, and again at the end whatever failed).
Exit status 0 only when every check passed.

When the model is scaled to zero, a turn answers `503 model_waking`: the check says so and
waits, with a countdown, up to `--wake-limit` seconds (default 20 minutes: an instance starts
and the container downloads and loads the model) before it fails.

To cover a new route, add a function decorated with `@check("what it proves")`: it gets the
`Smoke` (its `call`, `turn`, the sessions it made) and returns a short detail or raises
`CheckFailed`. Checks run in the order they are defined.
"""

import argparse
import dataclasses
import json
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from websockets.sync.client import connect

from client.rest import call, get_text
from client.sign_in import id_token, page_sign_in
from client.websocket import receive, send_chat

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WAKE_LIMIT_SECONDS = 20 * 60
# How long a turn may take once the model answers, and an async turn's poll interval.
TURN_SECONDS = 120
POLL_SECONDS = 1
SMOKE_USER_PREFIX = "smoke+"
# The page's security headers (chalicelib/page.py), as a browser must see them.
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


class CheckFailed(Exception):
    """One check's failure, in one sentence."""


@dataclasses.dataclass
class Smoke:
    """What the checks share: the service, the smoke user's token, and the sessions made."""

    url: str
    token: str
    wake_limit: float
    out: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    config: dict = dataclasses.field(default_factory=dict)
    sessions: dict[str, str] = dataclasses.field(default_factory=dict)
    # The last answered turn of each session, by the session's role.
    last_turns: dict[str, dict] = dataclasses.field(default_factory=dict)
    waited: float = 0.0

    def session(self, role: str) -> str:
        """The session id this run uses for `role` (made once, unique to the run)."""
        return self.sessions.setdefault(role, f"smoke-{role}-{uuid.uuid4().hex[:12]}")

    def call(self, method: str, path: str, body=None, signed_in: bool = True) -> tuple[int, dict]:
        return call(method, self.url + path, body, token=self.token if signed_in else None, timeout=TURN_SECONDS)

    def expect(self, status: int, wanted: int, body: dict, what: str) -> dict:
        if status != wanted:
            raise CheckFailed(f"{what} answered {status}, not {wanted}: {json.dumps(body)[:300]}")
        return body

    def until_awake(self, request: Callable[[], tuple[int, dict]]) -> tuple[int, dict]:
        """`request`'s answer once it is not `model_waking`, counting down while it is."""
        deadline = None
        while True:
            status, body = request()
            if not (status == 503 and isinstance(body, dict) and body.get("error") == "model_waking"):
                return status, body
            now = self.clock()
            if deadline is None:
                deadline = now + self.wake_limit
                self.out(f"       the model is scaled to zero and waking up: waiting up to {_minutes(self.wake_limit)}")
            left = deadline - now
            if left <= 0:
                raise CheckFailed(f"the model did not wake within {_minutes(self.wake_limit)}")
            pause = min(float(body.get("retry_after") or 10), left)
            self.out(f"       waiting for the model: {_minutes(left)} left (next try in {pause:.0f} s)")
            self.sleep(pause)
            self.waited += self.clock() - now

    def turn(self, role: str, query: str, **fields) -> dict:
        """A turn in the session of `role` (POST /chat), waiting for a waking model; the 200 answer."""
        body = {"sessionid": self.session(role), "query": query, **fields}
        status, answer = self.until_awake(lambda: self.call("POST", "/chat", body))
        self.last_turns[role] = self.expect(status, 200, answer, "POST /chat")
        return answer


Check = tuple[str, Callable[[Smoke], str]]
CHECKS: list[Check] = []


def check(name: str):
    def register(function: Callable[[Smoke], str]):
        CHECKS.append((name, function))
        return function
    return register


@check("the page and its security headers")
def page_headers(smoke: Smoke) -> str:
    status, headers, text = get_text(smoke.url + "/")
    if status != 200 or "<html" not in text.lower():
        raise CheckFailed(f"GET / answered {status} without the page")
    csp = headers.get("content-security-policy", "")
    problems = [f"{name}: {headers.get(name)!r}" for name, value in SECURITY_HEADERS.items()
                if headers.get(name) != value]
    if "frame-ancestors 'none'" not in csp:
        problems.append(f"content-security-policy without frame-ancestors 'none': {csp!r}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return "CSP with frame-ancestors 'none', nosniff, no-referrer"


@check("GET /config")
def page_config(smoke: Smoke) -> str:
    smoke.config = _config(smoke)
    return f"WebSocket {smoke.config.get('websocket_url')}"


def _config(smoke: Smoke) -> dict:
    status, body = smoke.call("GET", "/config", signed_in=False)
    body = smoke.expect(status, 200, body, "GET /config")
    if not body.get("sign_in"):
        raise CheckFailed("GET /config names no sign-in: `make config` has not recorded the user pool")
    return body


@check("a turn over REST")
def rest_turn(smoke: Smoke) -> str:
    answer = smoke.turn("rest", "Name one primary colour.")
    if not answer.get("answer") or answer.get("history_turns") != 0:
        raise CheckFailed(f"unexpected answer: {json.dumps(answer)[:300]}")
    return f"{len(answer['answer'])} characters"


@check("a follow-up that uses the history")
def follow_up(smoke: Smoke) -> str:
    answer = smoke.turn("rest", "And another one?")
    if answer.get("history_turns") != 1:
        raise CheckFailed(f"history_turns is {answer.get('history_turns')}, not 1")
    return "history_turns 1"


@check("regenerate: a turn that replaces the last one")
def regenerate(smoke: Smoke) -> str:
    replaced = smoke.last_turns["rest"]["turn"]
    answer = smoke.turn("rest", "And another one?", replaces=replaced)
    if answer.get("replaces") != [replaced] or answer.get("history_turns") != 1:
        raise CheckFailed(f"unexpected answer: {json.dumps(answer)[:300]}")
    status, body = smoke.call("GET", f"/sessions/{smoke.session('rest')}/turns/{replaced}")
    if smoke.expect(status, 200, body, "GET the replaced turn").get("replaced_by") != answer["turn"]:
        raise CheckFailed(f"the replaced turn does not name its replacement: {json.dumps(body)[:300]}")
    return "replaces the last turn, which is kept"


@check("feedback on an answer")
def feedback(smoke: Smoke) -> str:
    path = f"/sessions/{smoke.session('rest')}/turns/{smoke.last_turns['rest']['turn']}/feedback"
    status, body = smoke.call("PUT", path, {"rating": "up", "comment": "smoke check"})
    if smoke.expect(status, 200, body, "PUT feedback").get("feedback", {}).get("rating") != "up":
        raise CheckFailed(f"the rating was not kept: {json.dumps(body)[:300]}")
    status, body = smoke.call("DELETE", path)
    smoke.expect(status, 200, body, "DELETE feedback")
    return "given, then taken back"


@check("a turn over the WebSocket, streamed")
def websocket_turn(smoke: Smoke) -> str:
    websocket_url = smoke.config.get("websocket_url")
    if not websocket_url:
        raise CheckFailed("GET /config gives no WebSocket URL: run `make config` and `chalice deploy` again")
    with connect(f"{websocket_url}?token={smoke.token}", open_timeout=30) as connection:
        transcript = receive(connection, send_chat(connection, smoke.session("websocket"), "Name one planet."),
                             timeout=smoke.wake_limit + TURN_SECONDS)
    types = transcript.types
    if types[0] != "accepted" or types[-1] != "done" or "delta" not in types:
        raise CheckFailed(f"messages {types[:3]}...{types[-2:]}: not accepted, deltas, done ({transcript.last})")
    if transcript.streamed_text != transcript.last.get("answer"):
        raise CheckFailed("the deltas do not add up to the answer `done` carries")
    return f"accepted, {types.count('delta')} deltas, done; first delta after {transcript.seconds_to('delta'):.2f} s"


@check("an async turn through the queue and the worker")
def async_turn(smoke: Smoke) -> str:
    sessionid, turn = smoke.session("async"), uuid.uuid4().hex
    status, body = smoke.until_awake(lambda: smoke.call(
        "POST", "/chat", {"sessionid": sessionid, "query": "Name one ocean.", "turn": turn, "async": True}))
    if status not in (200, 202):
        raise CheckFailed(f"POST /chat async answered {status}: {json.dumps(body)[:300]}")
    deadline = smoke.clock() + smoke.wake_limit + TURN_SECONDS
    while body.get("status") != "done":
        if body.get("status") not in ("pending", "running") or smoke.clock() > deadline:
            raise CheckFailed(f"the turn is {body.get('status')!r}: {json.dumps(body)[:300]}")
        smoke.sleep(POLL_SECONDS)
        body = _turn_status(smoke, sessionid, turn)
    if not body.get("answer"):
        raise CheckFailed(f"done without an answer: {json.dumps(body)[:300]}")
    return "pending, then done"


def _turn_status(smoke: Smoke, sessionid: str, turn: str) -> dict:
    status, body = smoke.call("GET", f"/sessions/{sessionid}/turns/{turn}")
    return smoke.expect(status, 200, body, f"GET /sessions/{sessionid}/turns/{turn}")


@check("the session's messages")
def messages(smoke: Smoke) -> str:
    sessionid = smoke.session("rest")
    status, body = smoke.call("GET", f"/sessions/{sessionid}/messages")
    roles = [message.get("role") for message in smoke.expect(status, 200, body, "GET messages")["messages"]]
    if roles != ["user", "assistant", "user", "assistant"]:
        raise CheckFailed(f"the messages' roles are {roles}, not two turns")
    return "2 turns"


@check("rename, search and export a session")
def rename_search_export(smoke: Smoke) -> str:
    sessionid, word = smoke.session("rest"), f"smoke{secrets.token_hex(4)}"
    status, body = smoke.call("PATCH", f"/sessions/{sessionid}", {"title": f"Smoke check {word}"})
    smoke.expect(status, 200, body, "PATCH the session's title")
    status, body = smoke.call("GET", f"/sessions?q={word.upper()}")
    found = [summary.get("sessionid") for summary in smoke.expect(status, 200, body, "GET /sessions?q=")["sessions"]]
    if found != [sessionid]:
        raise CheckFailed(f"searching the new title found {found}, not [{sessionid}]")
    status, headers, text = get_text(f"{smoke.url}/sessions/{sessionid}/export?format=json", smoke.token,
                                     timeout=TURN_SECONDS)
    if status != 200 or not headers.get("content-disposition", "").startswith("attachment"):
        raise CheckFailed(f"the export answered {status} ({headers.get('content-disposition')!r}): {text[:300]}")
    exported = json.loads(text)
    if exported.get("title") != f"Smoke check {word}" or len(exported.get("turns", [])) != 2:
        raise CheckFailed(f"the export is not the renamed conversation of two turns: {text[:300]}")
    return "renamed, found by its title, exported"


@check("the user's sessions")
def sessions(smoke: Smoke) -> str:
    status, body = smoke.call("GET", "/sessions")
    listed = {summary.get("sessionid") for summary in smoke.expect(status, 200, body, "GET /sessions")["sessions"]}
    missing = set(smoke.sessions.values()) - listed
    if missing:
        raise CheckFailed(f"GET /sessions lacks {sorted(missing)}")
    return f"{len(listed)} listed"


@check("DELETE of each session")
def delete(smoke: Smoke) -> str:
    for sessionid in smoke.sessions.values():
        status, body = smoke.call("DELETE", f"/sessions/{sessionid}")
        smoke.expect(status, 200, body, f"DELETE /sessions/{sessionid}")
    status, body = smoke.call("GET", f"/sessions/{smoke.session('rest')}/messages")
    smoke.expect(status, 404, body, "GET messages after DELETE")
    return f"{len(smoke.sessions)} deleted, then 404"


@check("a request without a token is refused")
def unsigned(smoke: Smoke) -> str:
    status, body = smoke.call("GET", "/sessions", signed_in=False)
    smoke.expect(status, 401, body, "GET /sessions without a token")
    return "401"


def _minutes(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


# --- The smoke user ---------------------------------------------------------------------------

def smoke_password() -> str:
    """Random, and of every class the pool's policy asks for."""
    return secrets.token_urlsafe(24) + "aA1!"


def create_smoke_user(cognito, pool_id: str, password: str) -> str:
    """A confirmed user with `password`; its name. Users an interrupted run left go first."""
    for user in _smoke_users(cognito, pool_id):
        cognito.admin_delete_user(UserPoolId=pool_id, Username=user)
    username = f"{SMOKE_USER_PREFIX}{secrets.token_hex(6)}@example.com"
    cognito.admin_create_user(UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS", UserAttributes=[
        {"Name": "email", "Value": username}, {"Name": "email_verified", "Value": "true"}])
    cognito.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=password, Permanent=True)
    return username


def _smoke_users(cognito, pool_id: str) -> list[str]:
    users = []
    for listing in cognito.get_paginator("list_users").paginate(
            UserPoolId=pool_id, Filter=f'email ^= "{SMOKE_USER_PREFIX}"'):
        for user in listing["Users"]:
            email = next((a["Value"] for a in user.get("Attributes", []) if a["Name"] == "email"), "")
            if email.startswith(SMOKE_USER_PREFIX):
                users.append(user["Username"])
    return users


def run(url: str, user_pool_id: str, wake_limit: float = DEFAULT_WAKE_LIMIT_SECONDS, out=print,
        sleep=time.sleep) -> bool:
    """Every check against the service at `url`, as a fresh user of `user_pool_id`; True if all passed."""
    url = url.rstrip("/")
    sign_in = page_sign_in(url)
    if not sign_in:
        out(f"smoke: {url}/config names no sign-in: record the stack's outputs first (make config)")
        return False
    cognito = boto3.client("cognito-idp", endpoint_url=sign_in["endpoint"], region_name=sign_in["region"])
    password = smoke_password()
    username = create_smoke_user(cognito, user_pool_id, password)
    out(f"smoke: {url} as {username} (a user of {user_pool_id} until the end of the check)")
    smoke = Smoke(url, id_token(sign_in, username, password), wake_limit, out=out, sleep=sleep)
    failed = []
    try:
        for name, function in CHECKS:
            started, waited = time.perf_counter(), smoke.waited
            try:
                detail = function(smoke)
            except Exception as error:  # every failure is reported, and the checks go on
                failed.append(name)
                detail = error if isinstance(error, CheckFailed) else f"{type(error).__name__}: {error}"
                verdict = "FAIL"
            else:
                verdict = "ok"
            seconds = time.perf_counter() - started
            wait = f", after {_minutes(smoke.waited - waited)} waiting for the model" if smoke.waited > waited else ""
            out(f"  {verdict:<4} {name:<48} {seconds:7.2f} s  {detail}{wait}")
    finally:
        for sessionid in smoke.sessions.values():
            smoke.call("DELETE", f"/sessions/{sessionid}")
        cognito.admin_delete_user(UserPoolId=user_pool_id, Username=username)
    passed = len(CHECKS) - len(failed)
    if failed:
        out(f"smoke: FAILED, {passed} of {len(CHECKS)} checks passed; failed: {', '.join(failed)}")
    else:
        out(f"smoke: passed, all {len(CHECKS)} checks; the smoke user and its conversations are deleted")
    return not failed


def deployed_stage(stage: str, chalice_dir: Path = ROOT / ".chalice") -> tuple[str, str]:
    """The REST API's URL `chalice deploy` recorded and the user pool `make config` recorded."""
    deployed = chalice_dir / "deployed" / f"{stage}.json"
    if not deployed.exists():
        raise LookupError(f"stage {stage} is not deployed from here ({deployed} is missing): run make deploy")
    resources = json.loads(deployed.read_text())["resources"]
    url = next((r["rest_api_url"] for r in resources if r.get("resource_type") == "rest_api"), None)
    pool = json.loads((chalice_dir / "config.json").read_text())["stages"][stage].get(
        "environment_variables", {}).get("USER_POOL_ID")
    if not url or not pool:
        raise LookupError(f"stage {stage} has no REST API or user pool recorded: run make deploy")
    return url, pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", help="the deployed stage to check, e.g. dev")
    parser.add_argument("--url", help="check the service at this URL instead (with --user-pool-id)")
    parser.add_argument("--user-pool-id")
    parser.add_argument("--wake-limit", type=float, default=DEFAULT_WAKE_LIMIT_SECONDS,
                        help="seconds to wait for a model scaled to zero (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        url, pool = (args.url, args.user_pool_id) if args.url else deployed_stage(args.stage or "dev")
        if not pool:
            parser.error("--url needs --user-pool-id")
        return 0 if run(url, pool, args.wake_limit) else 1
    except (LookupError, OSError, BotoCoreError, ClientError) as error:
        print(f"smoke: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
