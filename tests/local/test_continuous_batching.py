"""The fake GPU's batching: TGI's admission rules and the published speed of Llama 2 7B on an A10G,
run on simulated time (the scheduler), and once in real time with threads (ContinuousBatching)."""

import statistics
import threading
import time

import pytest

from infrastructure.capacity import A10G_LLAMA2_7B_KV_CACHE_TOKENS
from local.continuous_batching import (
    LLAMA2_7B_ON_A10G,
    PUBLISHED_MS_PER_TOKEN,
    ContinuousBatching,
    Generation,
    GpuProfile,
    Scheduler,
    Step,
)

PREFILL_BUDGET = 3584 + 50  # TGI's default: the stack's MAX_INPUT_TOKENS and 50


def run(scheduler: Scheduler, until: float, now: float = 0.0, on_step=lambda now: None) -> float:
    """Step the scheduler on simulated time until `until` or until it has nothing to do."""
    while now < until and (step := scheduler.next_step(now)) is not None:
        now += step.seconds
        scheduler.complete(step, now)
        on_step(now)
    return now


def closed_loop(users: int, seconds: float = 120.0) -> list[Generation]:
    """The published benchmark's load: `users` each sending a 233-token prompt for 50 new tokens,
    again as soon as the last is answered (k6's constant virtual users)."""
    scheduler = Scheduler(LLAMA2_7B_ON_A10G, 1024 + 50)
    finished: list[Generation] = []
    active = [Generation(233, 50, 50) for _ in range(users)]
    for generation in active:
        scheduler.submit(generation, 0.0)

    def renew(now: float) -> None:
        for index, generation in enumerate(active):
            if generation.finished_at is not None:
                finished.append(generation)
                active[index] = Generation(233, 50, 50)
                scheduler.submit(active[index], now)

    run(scheduler, seconds, on_step=renew)
    return finished


@pytest.mark.parametrize("users", sorted(PUBLISHED_MS_PER_TOKEN))
def test_the_published_ms_a_token_at_each_concurrency_is_reproduced(users):
    """TGI's own per-token time (inference time over tokens, its queue time apart), as the
    benchmark reported its median, within 5 %."""
    finished = closed_loop(users)
    ms_a_token = statistics.median((g.finished_at - g.admitted_at) / g.tokens * 1000 for g in finished)
    assert ms_a_token == pytest.approx(PUBLISHED_MS_PER_TOKEN[users], rel=0.05)


def test_each_stream_slows_as_the_batch_grows_while_the_gpu_as_a_whole_speeds_up():
    per_stream, whole = [], []
    for users in (1, 5, 10, 20):
        finished = closed_loop(users, seconds=60)
        per_stream.append(statistics.median(g.tokens / (g.finished_at - g.admitted_at) for g in finished))
        whole.append(sum(g.tokens for g in finished) / 60)
    assert per_stream == sorted(per_stream, reverse=True) and per_stream[0] > 1.8 * per_stream[-1]
    assert whole == sorted(whole) and whole[-1] > 9 * whole[0]


def test_requests_beyond_the_kv_budget_wait_in_the_queue_first_come_first_served():
    """The stack's typical turn, 1,500 prompt tokens and 512 new ones, reserves 2,012 tokens:
    8 fit in the A10G's 16,224, a ninth waits until one ends."""
    scheduler = Scheduler(LLAMA2_7B_ON_A10G, PREFILL_BUDGET)
    turns = [Generation(1500, 512, 250, label=str(n)) for n in range(9)]
    for turn in turns:
        scheduler.submit(turn, 0.0)
    most_running = []
    run(scheduler, 600, on_step=lambda now: most_running.append(len(scheduler.running)))

    assert 8 * 2012 <= A10G_LLAMA2_7B_KV_CACHE_TOKENS < 9 * 2012
    assert max(most_running) == 8
    first_end = min(turn.finished_at for turn in turns[:8])
    assert turns[8].admitted_at >= first_end
    assert [turn.admitted_at for turn in turns] == sorted(turn.admitted_at for turn in turns)
    assert all(turn.generated == 250 for turn in turns)


def steps(scheduler: Scheduler, count: int, now: float) -> float:
    for _ in range(count):
        step = scheduler.next_step(now)
        now += step.seconds
        scheduler.complete(step, now)
    return now


def batch_of_ten() -> tuple[Scheduler, float]:
    """A batch of 10 (5,000 tokens reserved) that last took in requests 5 decode steps ago."""
    scheduler = Scheduler(LLAMA2_7B_ON_A10G, PREFILL_BUDGET)
    for _ in range(10):
        scheduler.submit(Generation(100, 400, 400), 0.0)
    now = steps(scheduler, 1 + 5, 0.0)  # their prefill, then 5 decode steps
    assert len(scheduler.running) == 10 and not scheduler.queue
    return scheduler, now


def decode_until_some_join(scheduler: Scheduler, now: float) -> tuple[Step, int]:
    """The step in which requests join, and the decode steps before it."""
    decode_steps = 0
    while (step := scheduler.next_step(now)).joining == ():
        decode_steps += 1
        now += step.seconds
        scheduler.complete(step, now)
    return step, decode_steps


def test_a_request_joins_a_running_batch_when_enough_wait_or_after_20_steps():
    """TGI's waiting_served_ratio (0.3) and max_waiting_tokens (20): beside a batch of 10, one
    waiting request joins 14 steps later (TGI counts the prefill as the first of the 20), three
    at once."""
    scheduler, now = batch_of_ten()
    late = Generation(100, 50, 50)
    scheduler.submit(late, now)
    step, decode_steps = decode_until_some_join(scheduler, now)
    assert step.joining == (late,) and decode_steps == 20 - 1 - 5

    scheduler, now = batch_of_ten()
    three = [Generation(100, 50, 50) for _ in range(3)]
    for generation in three:
        scheduler.submit(generation, now)
    assert scheduler.next_step(now).joining == tuple(three)


def test_enough_waiting_is_not_enough_when_fewer_fit_the_budget():
    """TGI's queue.rs counts the requests that fit, not those that wait: three wait beside the
    batch of ten, but with 11,224 tokens left only two of 5,000 fit, fewer than the three (0.3 of
    10) that would join at once; they join when the batch has waited 20 steps."""
    scheduler, now = batch_of_ten()
    three = [Generation(100, 4900, 50) for _ in range(3)]
    for generation in three:
        scheduler.submit(generation, now)

    step, decode_steps = decode_until_some_join(scheduler, now)

    assert step.joining == tuple(three[:2]) and decode_steps == 20 - 1 - 5


def test_a_prefill_holds_up_the_batch_and_a_long_prompt_waits_longer_for_its_first_token():
    scheduler = Scheduler(LLAMA2_7B_ON_A10G, PREFILL_BUDGET)
    short, long = Generation(100, 50, 50), Generation(3000, 50, 50)
    scheduler.submit(short, 0.0)
    now = run(scheduler, 0.5)
    scheduler.submit(long, now)
    timeline = [(now, short.generated)]
    run(scheduler, 3.0, now=now, on_step=lambda at: timeline.append((at, short.generated)))

    prefill = LLAMA2_7B_ON_A10G.prefill_seconds(3000)
    assert long.first_token_at - long.admitted_at == pytest.approx(prefill) and prefill > 0.5
    short_tokens = dict(timeline)
    assert short_tokens[long.first_token_at] == short_tokens[long.admitted_at]  # nothing meanwhile
    assert short.first_token_at - short.submitted_at < 0.1 < long.first_token_at - long.submitted_at


def test_a_request_that_can_never_fit_is_refused():
    with pytest.raises(ValueError, match="never fits a KV cache"):
        Scheduler(LLAMA2_7B_ON_A10G, PREFILL_BUDGET).submit(Generation(16000, 512, 10), 0.0)


# A GPU fifteen times faster than the A10G, whose KV cache holds what each test says.
def fast_gpu(kv_cache_tokens: int) -> ContinuousBatching:
    profile = GpuProfile("fast", kv_cache_tokens, step_seconds=0.002, token_seconds=0.00001, context_token_seconds=0)
    return ContinuousBatching(profile, max_input_tokens=100)


def consume(batching: ContinuousBatching, words: list[str], max_new_tokens: int, out: list, leave_after=None):
    for word in batching.paced(words, prompt_tokens=10, max_new_tokens=max_new_tokens, label=words[0]):
        out.append(word)
        if len(out) == leave_after:
            break


def test_in_real_time_requests_at_once_each_get_their_words_in_order():
    batching = fast_gpu(kv_cache_tokens=4 * 40)
    try:
        words = {name: [name, *(f"{name}{n}" for n in range(25))] for name in "abcd"}
        received = {name: [] for name in words}
        threads = [threading.Thread(target=consume, args=(batching, words[name], 30, received[name]))
                   for name in words]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert received == words
        assert all(g.generated == 27 and g.first_token_at < g.finished_at for g in batching.generations)
    finally:
        batching.close()


def test_in_real_time_a_request_that_leaves_gives_its_place_in_the_batch_to_the_next():
    """Room for one request at a time: the second leaves after two words, and the third is
    admitted before the second could have generated all its tokens."""
    batching = fast_gpu(kv_cache_tokens=10 + 1000)
    try:
        first, second, third = [], [], []
        consume(batching, ["a", "b", "c"], 1000, first)
        consume(batching, [f"w{n}" for n in range(999)], 1000, second, leave_after=2)
        consume(batching, ["x", "y"], 1000, third)

        assert (first, second, third) == (["a", "b", "c"], ["w0", "w1"], ["x", "y"])
        _, left, last = batching.generations
        assert left.cancelled and left.generated < left.tokens == 1000
        assert last.finished_at is not None and last.generated == 3
    finally:
        batching.close()


def test_closing_the_gpu_ends_the_wait_of_a_request_under_way():
    """A request queued behind another when the GPU stops gets its words at once, never generated."""
    batching = fast_gpu(kv_cache_tokens=10 + 1000)
    holding = batching.paced(["a", "b"], prompt_tokens=10, max_new_tokens=1000)
    queued: list[str] = []
    try:
        assert next(holding) == "a"
        thread = threading.Thread(target=consume, args=(batching, ["x", "y"], 1000, queued))
        thread.start()
        deadline = time.monotonic() + 30
        while len(batching.generations) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        batching.close()
        thread.join(30)

        assert not thread.is_alive() and queued == ["x", "y"]
        assert batching.generations[1].admitted_at is None and batching.generations[1].generated == 0
    finally:
        holding.close()
        batching.close()
