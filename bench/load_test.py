"""`make load`: how many users one stage serves, from simulated users against `make run`.

`make run` (local.launcher.Launcher) runs the service on 127.0.0.1 with the turn worker's
concurrency of a stage of one ml.g5.2xlarge (WORKER_CONCURRENCY 8, docs/capacity.md), and a fake
model that batches as TGI does on one A10G (local/continuous_batching.py: slower per stream the
more run at once, queued beyond its KV cache). For each number of users in turn it reports p50
and p95 time to first token, turns a minute, tokens a second, errors by code and queue wait, and
then the knee: where p95 time to first token passes 2 s.

The users:
- each signs in as a Cognito user of its own, made here in make run's Cognito stand-in, so that
  the real per-user rate limit (TURNS_PER_MINUTE) applies to each as to a real user; make run's
  one local user would have every turn counted against one limit;
- each talks in a conversation of its own (a new one at each level), with think time between
  turns: reading the answer, then writing the next question;
- question and answer lengths follow LMSYS-Chat-1M, one million real conversations with 25 LLMs
  (Zheng et al. 2023, arXiv:2309.11998, Table 1): 69.5 tokens a prompt and 214.5 an answer on
  average. The paper gives averages only: lengths are log-normal with those means and sigma 1 (an
  assumption: chat lengths are long-tailed), a question at most what the stage accepts (a longer
  one is refused, and a real user would shorten it), an answer at most MAX_NEW_TOKENS;
- turns go over the WebSocket (as the page sends them), synchronous `POST /chat` and asynchronous
  `POST /chat {"async": true}` polled for its status, 6, 2 and 2 of every 10 (an assumption).

Every loop is bounded in count and time, and everything talks to 127.0.0.1 only.

    python -m bench.load_test [--users 1,5,10,20,50,100,150,200] [--seconds 180] [--warm-up 90]
                              [--think-scale 1] [--save bench/load_curve.json] [--table]
"""

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench import capacity_table
from bench.capacity_table import TTFT_TARGET_SECONDS, at_target, crossing
from chalicelib.errors import InvalidRequest
from chalicelib.settings import Settings
from chalicelib.token_bounds import fixed_prompt_tokens
from client.rest import call
from client.sign_in import id_token, page_sign_in
from client.websocket import receive, send_chat
from local.cognito import create_user
from local.continuous_batching import LLAMA2_7B_ON_A10G, ContinuousBatching
from local.fake_model import FakeEndpoint, serving
from local.launcher import Launcher
from local.llama2_tokenizer import Llama2Tokenizer
from local.net import free_port
from local.settings import USER_POOL_ID, stage_environment

ROOT = Path(__file__).resolve().parent.parent
CURVE = ROOT / "bench" / "load_curve.json"

QUESTION_TOKENS_MEAN = 69.5
ANSWER_TOKENS_MEAN = 214.5
LENGTH_SIGMA = 1.0
# Think time: reading the answer, silently, at 238 words a minute (non-fiction; Brysbaert 2019,
# "How many words do we read per minute?", J. Memory and Language 109:104047), then typing the next
# question at 52 words a minute (Dhakal et al. 2018, "Observations on Typing from 136 Million
# Keystrokes", CHI); an English word is about 4/3 of a token (0.75 words a token).
READING_WORDS_PER_MINUTE = 238
TYPING_WORDS_PER_MINUTE = 52
WORDS_PER_TOKEN = 0.75
PATHS = ("websocket", "rest", "websocket", "async", "websocket", "websocket", "rest", "websocket", "async", "websocket")
# Always measured (the levels); beyond them the load test goes on until the knee is passed.
REPORTED_USERS = (1, 5, 10, 20, 50)
DEFAULT_USERS = (*REPORTED_USERS, 100, 150, 200)
# Bounds of every loop.
MAX_TURNS_PER_USER = 200
TURN_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.5
# Words Llama 2's tokenizer makes one token each (with the space before them): a text of n of them
# is n tokens, so the fake model's one-token-a-word pace is Llama 2's (tests/e2e/test_load.py checks).
WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
         "this", "are", "or", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their")
MARKER = re.compile(r"^\[(\w+)\]")
PASSWORD = "Load-test-1"


def lognormal(rng: random.Random, mean: float, sigma: float = LENGTH_SIGMA) -> float:
    """A log-normal draw with this mean: mu = ln(mean) - sigma^2 / 2."""
    return rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)


def text_of(tokens: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


def think_seconds(answer_tokens: int, next_question_tokens: int) -> float:
    """Reading an answer, then typing the next question."""
    reading = answer_tokens * WORDS_PER_TOKEN / READING_WORDS_PER_MINUTE * 60
    typing = next_question_tokens * WORDS_PER_TOKEN / TYPING_WORDS_PER_MINUTE * 60
    return reading + typing


@dataclasses.dataclass(frozen=True)
class TurnPlan:
    turn: str
    path: str
    question_tokens: int
    answer_tokens: int

    @classmethod
    def draw(cls, rng: random.Random, turn: str, path: str, max_question_tokens: int,
             max_answer_tokens: int) -> "TurnPlan":
        return cls(turn, path, min(max_question_tokens, max(1, round(lognormal(rng, QUESTION_TOKENS_MEAN)))),
                   min(max_answer_tokens, max(1, round(lognormal(rng, ANSWER_TOKENS_MEAN)))))


def longest_question(settings: Settings) -> int:
    """The most tokens a question may have that the stage accepts whatever its words: within
    MAX_QUERY_CHARS, and with the system prompt within the prompt budget (as chalicelib checks)."""
    def accepted(tokens: int) -> bool:
        question = f"[{'x' * 16}] " + " ".join([max(WORDS, key=len)] * tokens)
        try:
            fixed_prompt_tokens(settings, question)
        except InvalidRequest:
            return False
        return len(question) <= settings.max_query_chars

    low, high = 1, settings.max_query_chars
    while low < high:  # the largest accepted: at most log2(MAX_QUERY_CHARS) steps
        middle = (low + high + 1) // 2
        low, high = (middle, high) if accepted(middle) else (low, middle - 1)
    return low


@dataclasses.dataclass
class TurnRecord:
    """What one user saw of one turn (seconds from sending it)."""

    plan: TurnPlan
    sent_at: float
    first_text: float | None = None  # the first delta; a REST answer's whole text
    answered: float | None = None
    error: str | None = None
    queued: bool = False  # told it waits for a worker


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile, None of nothing."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class LoadService:
    """make run with the batching fake model, and the users' accounts; `running` starts and stops it."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack):
        limits = stage_environment()
        self.max_question_tokens = longest_question(Settings.model_validate(limits))
        self.max_new_tokens = int(limits["MAX_NEW_TOKENS"])
        self.worker_concurrency = int(limits["WORKER_CONCURRENCY"])
        self.plans: dict[str, TurnPlan] = {}
        self.model_called: dict[str, float] = {}
        tokenizer = Llama2Tokenizer()
        stack.callback(tokenizer.close)
        self.batching = ContinuousBatching(LLAMA2_7B_ON_A10G, int(limits["MAX_INPUT_TOKENS"]))
        stack.callback(self.batching.close)
        fake = FakeEndpoint(int(limits["MAX_INPUT_TOKENS"]), int(limits["MAX_TOTAL_TOKENS"]), tokenizer=tokenizer,
                            answer_for=self._answer_for, batching=self.batching)
        model_server = stack.enter_context(serving(fake))
        self.launcher = Launcher(free_port(), folder / "data", folder / "run.log",
                                 AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_server.url)
        stack.callback(self.launcher.stop)
        self.sign_in = page_sign_in(self.launcher.url)
        self.usernames: list[str] = []

    @classmethod
    @contextlib.contextmanager
    def running(cls, users: int):
        """The service with `users` users of its own, until the block ends."""
        with tempfile.TemporaryDirectory(prefix="load-test-") as folder, contextlib.ExitStack() as stack:
            service = cls(Path(folder), stack)
            service.usernames = service._create_users(users)
            service._warm_up()
            yield service

    def _create_users(self, count: int) -> list[str]:
        """Users of make run's Cognito stand-in, created as an administrator would (moto takes any
        credentials; it runs on 127.0.0.1)."""
        cognito = boto3.client("cognito-idp", endpoint_url=self.sign_in["endpoint"], region_name=self.sign_in["region"],
                               aws_access_key_id="load-test", aws_secret_access_key="load-test")
        run = uuid.uuid4().hex[:8]
        names = [f"load-{run}-{number}@example.com" for number in range(count)]
        for name in names:
            create_user(cognito, USER_POOL_ID, name, PASSWORD)
        return names

    def _warm_up(self) -> None:
        """A turn on each path first, unmeasured: each process of make run loads the app on its first."""
        user = User(self, 0, self.tokens(1)[0], "warm", random.Random(0), think_scale=0)
        for number, path in enumerate(("websocket", "rest", "async")):
            record = user.turn(TurnPlan(f"warmu0t{number}", path, 10, 10))
            if record.error:
                raise RuntimeError(f"the warm-up's {path} turn failed: {record.error} (log: {self.launcher.log_path})")
        user.close()

    def tokens(self, count: int) -> list[str]:
        """Fresh ID tokens of the first `count` users (they last an hour)."""
        return [id_token(self.sign_in, name, PASSWORD) for name in self.usernames[:count]]

    def _answer_for(self, number: int, question: str) -> str:
        """The planned answer of the turn the question names; the model is called now."""
        found = MARKER.match(question)
        plan = self.plans.get(found[1]) if found else None
        if plan is None:
            return "A short answer."
        self.model_called[plan.turn] = time.perf_counter()
        return text_of(plan.answer_tokens, random.Random(plan.turn))


class User:
    """One simulated user: a conversation of its own, turns with think time, until the deadline."""

    def __init__(self, service: LoadService, number: int, token: str, level: str, rng: random.Random,
                 think_scale: float):
        self.service, self.number, self.token, self.rng = service, number, token, rng
        self.think_scale = think_scale
        self.sessionid = f"load-{level}-{uuid.uuid4().hex[:8]}-{number}"
        self.level = level
        self.records: list[TurnRecord] = []
        self._connections = contextlib.ExitStack()  # its WebSocket connections, each closed at the end
        self._websocket = None

    def run(self, deadline: float) -> None:
        try:
            plan = self._plan(0)
            time.sleep(min(max(0.0, deadline - time.perf_counter()),
                           self.rng.uniform(0, self._think(ANSWER_TOKENS_MEAN, plan.question_tokens))))
            for number in range(MAX_TURNS_PER_USER):
                if time.perf_counter() >= deadline:
                    return
                record = self.turn(plan)
                self.records.append(record)
                plan = self._plan(number + 1)
                think = self._think(record.plan.answer_tokens, plan.question_tokens)
                if time.perf_counter() + think >= deadline:
                    return
                time.sleep(think)
        finally:
            self.close()

    def close(self) -> None:
        self._connections.close()
        self._websocket = None

    def _think(self, answer_tokens: float, question_tokens: int) -> float:
        return think_seconds(answer_tokens, question_tokens) * self.think_scale

    def _plan(self, number: int) -> TurnPlan:
        turn = f"{self.level}u{self.number}t{number}"
        plan = TurnPlan.draw(self.rng, turn, PATHS[(self.number + number) % len(PATHS)],
                             self.service.max_question_tokens, self.service.max_new_tokens - 1)
        self.service.plans[turn] = plan
        return plan

    def turn(self, plan: TurnPlan) -> TurnRecord:
        question = f"[{plan.turn}] {text_of(plan.question_tokens, self.rng)}"
        record = TurnRecord(plan, time.perf_counter())
        try:
            {"websocket": self._streamed, "rest": self._synchronous, "async": self._asynchronous}[plan.path](
                record, question)
        except (TimeoutError, ConnectionClosed, OSError) as error:
            record.error = "client_timeout" if isinstance(error, TimeoutError) else "connection_failed"
            if self._websocket is not None:  # the next streamed turn connects anew
                self._websocket.close()
                self._websocket = None
        return record

    def _streamed(self, record: TurnRecord, question: str) -> None:
        if self._websocket is None:
            self._websocket = self._connections.enter_context(
                connect(f"{self.service.launcher.websocket_url}?token={self.token}", open_timeout=60))
        transcript = receive(self._websocket, send_chat(self._websocket, self.sessionid, question, record.plan.turn),
                             timeout=TURN_TIMEOUT_SECONDS)
        record.queued = any(m["type"] == "status" and m.get("status") == "queued" for m in transcript.messages)
        if transcript.last["type"] != "done":
            record.error = transcript.last.get("error", transcript.last["type"])
            return
        deltas = [seconds for seconds, message in transcript.received if message["type"] == "delta"]
        record.answered = transcript.seconds_to("done")
        record.first_text = deltas[0] if deltas else record.answered

    def _synchronous(self, record: TurnRecord, question: str) -> None:
        status, body = call("POST", f"{self.service.launcher.url}/chat",
                            {"sessionid": self.sessionid, "query": question, "turn": record.plan.turn},
                            token=self.token, timeout=TURN_TIMEOUT_SECONDS)
        if status != 200:
            record.error = body.get("error", f"http_{status}")
            return
        record.first_text = record.answered = time.perf_counter() - record.sent_at

    def _asynchronous(self, record: TurnRecord, question: str) -> None:
        url = self.service.launcher.url
        status, body = call("POST", f"{url}/chat", {"sessionid": self.sessionid, "query": question,
                                                    "turn": record.plan.turn, "async": True}, token=self.token)
        if status not in (200, 202):
            record.error = body.get("error", f"http_{status}")
            return
        deadline = record.sent_at + TURN_TIMEOUT_SECONDS
        while body.get("status") == "pending":
            if time.perf_counter() > deadline:
                raise TimeoutError(f"turn {record.plan.turn} still pending")
            time.sleep(POLL_SECONDS)
            status, body = call("GET", f"{url}/sessions/{self.sessionid}/turns/{record.plan.turn}", token=self.token)
            if status != 200:
                record.error = body.get("error", f"http_{status}")
                return
        if body["status"] != "done":
            record.error = body.get("error", body["status"])
            return
        record.first_text = record.answered = time.perf_counter() - record.sent_at


def summarize(users: int, records: list[TurnRecord], generations, batch_sizes, model_called: dict[str, float],
              window: tuple[float, float]) -> dict:
    """A level's figures over the turns sent within `window` (perf_counter seconds)."""
    start, end = window
    measured = [r for r in records if start <= r.sent_at < end]
    answered = [r for r in measured if r.error is None]

    def seconds(path: str) -> list[float]:
        return [r.first_text for r in answered if r.plan.path == path]

    handed_over = [model_called[r.plan.turn] - r.sent_at for r in answered
                   if r.plan.path != "rest" and r.plan.turn in model_called]
    in_window = [g for g in generations if g.submitted_at is not None and start <= g.submitted_at < end]
    model_queue = [g.admitted_at - g.submitted_at for g in in_window if g.admitted_at is not None]
    batches = [size for at, size in batch_sizes if start <= at < end]
    minutes = (end - start) / 60
    figures = {
        "users": users,
        "turns": len(measured),
        "turns_per_minute": len(answered) / minutes,
        "tokens_per_second": sum(g.generated for g in in_window) / (end - start),
        "prompt_tokens_mean": statistics.fmean(g.prompt_tokens for g in in_window) if in_window else None,
        "batch_mean": statistics.fmean(batches) if batches else None,
        "errors": dict(collections.Counter(r.error for r in measured if r.error)),
        "queued_turns": sum(r.queued for r in measured),
        "cpu_load": os.getloadavg()[0] / os.cpu_count(),
    }
    for name, values in (("ttft", seconds("websocket")), ("rest_answer", seconds("rest")),
                         ("async_answer", seconds("async")), ("to_model_call", handed_over),
                         ("model_queue", model_queue)):
        figures[f"{name}_p50"], figures[f"{name}_p95"] = percentile(values, 0.5), percentile(values, 0.95)
    return figures


def run_level(service: LoadService, users: int, seconds: float, warm_up: float, think_scale: float,
              seed: int) -> dict:
    level = f"n{users}"
    tokens = service.tokens(users)
    rng = random.Random(f"{seed}-{users}")
    population = [User(service, number, tokens[number], level, random.Random(rng.random()), think_scale)
                  for number in range(users)]
    start = time.perf_counter()
    deadline = start + warm_up + seconds
    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        # Each user starts no turn after the deadline, and its last one ends within its timeout.
        for running in [pool.submit(user.run, deadline) for user in population]:
            running.result(timeout=deadline - time.perf_counter() + TURN_TIMEOUT_SECONDS + 60)
    records = [record for user in population for record in user.records]
    return summarize(users, records, list(service.batching.generations), list(service.batching.batch_sizes),
                     service.model_called, (start + warm_up, deadline))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


# The report's columns: heading, and the figure of a level. Times in ms.
COLUMNS = (
    ("users", lambda level: str(level["users"])),
    ("turns", lambda level: str(level["turns"])),
    ("turns/min", lambda level: _number(level["turns_per_minute"])),
    ("tokens/s", lambda level: _number(level["tokens_per_second"])),
    ("TTFT p50", lambda level: _ms(level["ttft_p50"])),
    ("p95", lambda level: _ms(level["ttft_p95"])),
    ("REST p50", lambda level: _ms(level["rest_answer_p50"])),
    ("p95", lambda level: _ms(level["rest_answer_p95"])),
    ("async p50", lambda level: _ms(level["async_answer_p50"])),
    ("p95", lambda level: _ms(level["async_answer_p95"])),
    ("to model p50", lambda level: _ms(level["to_model_call_p50"])),
    ("p95", lambda level: _ms(level["to_model_call_p95"])),
    ("GPU queue p95", lambda level: _ms(level["model_queue_p95"])),
    ("batch", lambda level: _number(level["batch_mean"])),
    ("prompt", lambda level: _number(level["prompt_tokens_mean"])),
    ("queued", lambda level: str(level["queued_turns"])),
    ("load", lambda level: f"{level['cpu_load']:.2f}"),
)


def report(curve: dict) -> str:
    """The curve as a table (one line a level), and the knee."""
    levels = curve["levels"]
    rows = [[heading for heading, _ in COLUMNS]] + [[figure(level) for _, figure in COLUMNS] for level in levels]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    errors = ["errors"] + [", ".join(f"{code} {count}" for code, count in sorted(level["errors"].items())) or "none"
                           for level in levels]
    lines = [f"make run with {curve['worker_concurrency']} workers and {curve['model']}; think time "
             f"x{curve['think_scale']:g}; {curve['seconds']:g} s measured a level, after {curve['warm_up']:g} s. "
             "turns: turns sent in the measured time, which the percentiles rest on; "
             "times in ms; batch: the GPU's mean batch; prompt: mean prompt tokens; queued: turns told they wait "
             "for a worker; load: the machine's load average a core."]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) + f"  {error}"
              for row, error in zip(rows, errors, strict=True)]
    within, past = crossing(levels)
    target = f"p95 time to first token {TTFT_TARGET_SECONDS:g} s"
    if past is None:
        lines.append(f"knee: not reached, within the {target} up to {within['users']} users")
    elif within is None:
        lines.append(f"knee: past the {target} already at {past['users']} users")
    else:
        lines.append(f"knee: the {target} is passed between {within['users']} users ({_ms(within['ttft_p95'])} ms) "
                     f"and {past['users']} ({_ms(past['ttft_p95'])} ms): about {at_target(levels).users:.0f} users")
    return "\n".join(lines)


def measure(users: list[int], seconds: float, warm_up: float, think_scale: float, seed: int = 1) -> dict:
    """The curve: one level of `users` at a time against one make run, until the knee is passed
    (the REPORTED_USERS always)."""
    curve = {"measured_on": datetime.date.today().isoformat(), "model": LLAMA2_7B_ON_A10G.name,
             "seconds": seconds, "warm_up": warm_up, "think_scale": think_scale, "levels": []}
    with LoadService.running(max(users)) as service:
        curve["worker_concurrency"] = service.worker_concurrency
        for count in users:
            curve["levels"].append(run_level(service, count, seconds, warm_up, think_scale, seed))
            print(f"  {count} users: p95 time to first token {_ms(curve['levels'][-1]['ttft_p95'])} ms", flush=True)
            if count not in REPORTED_USERS and crossing(curve["levels"])[1] is not None:
                break
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default=",".join(map(str, DEFAULT_USERS)),
                        help="the numbers of users, one level each, in order")
    parser.add_argument("--seconds", type=float, default=180, help="measured seconds a level")
    parser.add_argument("--warm-up", type=float, default=90, help="seconds a level runs before it is measured")
    parser.add_argument("--think-scale", type=float, default=1.0, help="think time's multiple (1: as cited)")
    parser.add_argument("--save", type=Path, help=f"write the curve here as JSON (e.g. {CURVE.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the capacity table from the saved curve and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(capacity_table.table(json.loads(CURVE.read_text())))
        return 0
    curve = measure([int(n) for n in args.users.split(",")], args.seconds, args.warm_up, args.think_scale)
    print(report(curve))
    if args.save:
        args.save.write_text(json.dumps(curve, indent=2) + "\n")
    print(capacity_table.table(curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
