"""One copy of the model on one GPU serving many generations at once, as TGI batches them: the pace
the fake endpoint (local/fake_model.py) streams at when given a `ContinuousBatching`, so that make
run under load slows down, and queues, as a deployed stage does.

The rules are TGI 2.3's router (backends/v3/src/backend.rs and queue.rs):
- a request waits in a queue, first come first served, until the batch has room for it in the KV
  budget, `max_batch_total_tokens`: from its admission to its end it holds its prompt and its
  `max_new_tokens` (a whole prefill must also fit in `max_batch_prefill_tokens`, by default the
  longest prompt plus 50);
- while a batch runs, waiting requests join it only when `waiting_served_ratio` of the batch of
  them fit its budgets (fewer join none), or after `max_waiting_tokens` decode steps without a
  join; their prefill (which gives each its first token) holds up the batch;
- each decode step gives every running generation one token, and takes longer the bigger the
  batch: the weights are read once a step, and each sequence adds its own work and its KV cache.
vLLM's scheduler differs in detail (it takes KV blocks as tokens come, and preempts when they run
out) but likewise queues what its KV budget cannot hold.

The GPU's speed (`LLAMA2_7B_ON_A10G`) comes from published measurements of Llama 2 7B in fp16 under
TGI on one A10G (ml.g5.2xlarge); each constant below names its source.
"""

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Iterator

from chalicelib.settings import DEFAULT_MAX_INPUT_TOKENS
from infrastructure.capacity import A10G_LLAMA2_7B_KV_CACHE_TOKENS, LLAMA2_7B_KV_BYTES_PER_TOKEN

# Median ms per generated token of TGI 1.0.3 serving meta-llama/Llama-2-7b-hf in fp16 on one
# ml.g5.2xlarge, by concurrent requests, 50 new tokens each: "Llama 2 on Amazon SageMaker a
# Benchmark" (huggingface.co/blog/llama-sagemaker-benchmark), raw data in
# philschmid/text-generation-inference-tests, results/sagemaker/Llama-2-7b-hf_ml.g5.2xlarge_tp_1_vu_*.json.
PUBLISHED_MS_PER_TOKEN = {1: 30.96, 5: 37.94, 10: 44.93, 20: 60.86}
# Its prompts (ShareGPT samples) average 233 tokens with Llama 2's tokenizer, and each request
# generated 50 tokens: halfway through, a sequence holds about 258 tokens of KV cache.
PUBLISHED_PROMPT_TOKENS = 233
PUBLISHED_NEW_TOKENS = 50
PUBLISHED_CONTEXT_TOKENS = PUBLISHED_PROMPT_TOKENS + PUBLISHED_NEW_TOKENS // 2
# The A10G reads its 24 GB of GDDR6 at 600 GB/s (Baseten, "NVIDIA A10 vs A10G for ML model inference").
A10G_BYTES_PER_SECOND = 600e9
# TGI 2.3's launcher defaults (launcher/src/main.rs).
TGI_WAITING_SERVED_RATIO = 0.3
TGI_MAX_WAITING_TOKENS = 20
TGI_PREFILL_MARGIN_TOKENS = 50


def _linear_fit(points: dict[int, float]) -> tuple[float, float]:
    """Least squares: (intercept, slope) of y over x."""
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


@dataclasses.dataclass(frozen=True)
class GpuProfile:
    """How fast one copy of a model on one GPU is, and the KV budget it batches within."""

    name: str
    kv_cache_tokens: int
    step_seconds: float  # a decode step's fixed part: reading the weights once
    token_seconds: float  # one token's arithmetic: a prompt token in a prefill, a sequence in a step
    context_token_seconds: float  # reading one token of a sequence's KV cache in a step
    waiting_served_ratio: float = TGI_WAITING_SERVED_RATIO
    max_waiting_tokens: int = TGI_MAX_WAITING_TOKENS

    def decode_seconds(self, contexts: list[int]) -> float:
        """One decode step of sequences holding these many tokens each."""
        return self.step_seconds + len(contexts) * self.token_seconds + sum(contexts) * self.context_token_seconds

    def prefill_seconds(self, prompt_tokens: int) -> float:
        return prompt_tokens * self.token_seconds


def _llama2_7b_on_a10g() -> GpuProfile:
    """The published ms a token over concurrency is nearly a line (within 2 %). With b requests
    generating 50 tokens each, a request's 50 decode steps each take the fixed part and every
    sequence's part, and between them come the b prefills of 233 prompt tokens:
        ms a token = fixed + b x (compute + context x KV read + 233 / 50 x compute),
    where `compute` is one token's arithmetic (2 FLOPs a parameter, the same for a prompt token in
    a prefill as for a sequence's token in a decode step) and a KV read is 512 KiB at 600 GB/s.
    So the line's intercept is the fixed part and its slope gives `compute`: about 0.24 ms, which
    is 57 TFLOPS of fp16, and makes a 1,500-token prompt's prefill 0.35 s."""
    fixed_ms, slope_ms = _linear_fit(PUBLISHED_MS_PER_TOKEN)
    context_token_seconds = LLAMA2_7B_KV_BYTES_PER_TOKEN / A10G_BYTES_PER_SECOND
    return GpuProfile(
        name="Llama 2 7B fp16 on one A10G (ml.g5.2xlarge), TGI",
        kv_cache_tokens=A10G_LLAMA2_7B_KV_CACHE_TOKENS,
        step_seconds=fixed_ms / 1000,
        token_seconds=(slope_ms / 1000 - PUBLISHED_CONTEXT_TOKENS * context_token_seconds)
        / (1 + PUBLISHED_PROMPT_TOKENS / PUBLISHED_NEW_TOKENS),
        context_token_seconds=context_token_seconds,
    )


LLAMA2_7B_ON_A10G = _llama2_7b_on_a10g()


@dataclasses.dataclass(eq=False)
class Generation:
    """One request to the GPU, and when each thing happened to it (the scheduler's clock)."""

    prompt_tokens: int
    max_new_tokens: int
    tokens: int  # how many it generates: its answer's and the end of sequence, at most max_new_tokens
    label: str = ""
    submitted_at: float | None = None
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    generated: int = 0
    cancelled: bool = False

    @property
    def reserved_tokens(self) -> int:
        """What it holds of the KV budget from its admission to its end."""
        return self.prompt_tokens + self.max_new_tokens

    @property
    def context_tokens(self) -> int:
        return self.prompt_tokens + self.generated

    @property
    def over(self) -> bool:
        return self.finished_at is not None or self.cancelled


@dataclasses.dataclass(frozen=True)
class Step:
    """What the GPU does next: prefill `joining` (and give each its first token), or, when nothing
    joins, one decode step of the batch."""

    seconds: float
    joining: tuple[Generation, ...] = ()


class Scheduler:
    """TGI's batching rules and the GPU's step times, without threads or a clock of its own:
    `next_step(now)` says what the GPU does next and for how long; `complete(step, now)` applies it."""

    def __init__(self, profile: GpuProfile, max_batch_prefill_tokens: int):
        self.profile = profile
        self.max_batch_prefill_tokens = max_batch_prefill_tokens
        self.queue: collections.deque[Generation] = collections.deque()
        self.running: list[Generation] = []
        self._steps_without_join = 0
        self._decode_next = False

    def submit(self, generation: Generation, now: float) -> None:
        if generation.reserved_tokens > self.profile.kv_cache_tokens:
            # TGI refuses to start with limits like these (max_total_tokens > max_batch_total_tokens).
            raise ValueError(f"a request of {generation.reserved_tokens} tokens never fits a KV cache of "
                             f"{self.profile.kv_cache_tokens}")
        generation.submitted_at = now
        self.queue.append(generation)

    def next_step(self, now: float) -> Step | None:
        self.queue = collections.deque(g for g in self.queue if not g.cancelled)
        self.running = [g for g in self.running if not g.cancelled]
        if not self._decode_next:
            if joining := self._joining():
                for generation in joining:
                    generation.admitted_at = now
                return Step(self.profile.prefill_seconds(sum(g.prompt_tokens for g in joining)), joining)
        if not self.running:
            return None
        return Step(self.profile.decode_seconds([g.context_tokens for g in self.running]))

    def complete(self, step: Step, now: float) -> None:
        if step.joining:
            self.queue = collections.deque(g for g in self.queue if g not in step.joining)
            self.running.extend(g for g in step.joining if not g.cancelled)
            self._steps_without_join = 1
            advancing = [g for g in step.joining if not g.cancelled]
            # TGI decodes the whole batch once after a prefill, before it looks at the queue again.
            self._decode_next = True
        else:
            self._steps_without_join += 1
            advancing = list(self.running)
            self._decode_next = False
        for generation in advancing:
            generation.generated += 1
            if generation.first_token_at is None:
                generation.first_token_at = now
            if generation.generated >= generation.tokens:
                generation.finished_at = now
        self.running = [g for g in self.running if not g.over]
        if not self.running:
            self._decode_next = False

    def _joining(self) -> tuple[Generation, ...]:
        """The requests at the head of the queue that join now: backend.rs's `next_batch` call, with
        its `min_size` (`waiting_served_ratio` of the batch, none once the batch has run
        `max_waiting_tokens` steps without a join), and queue.rs's `next_batch`
        (TGI 2.3.1), which takes requests in order while they fit the prefill and KV budgets and
        returns no batch when fewer than `min_size` of them fit."""
        least, budget = 0, self.profile.kv_cache_tokens
        if self.running:
            if self._steps_without_join < self.profile.max_waiting_tokens:
                least = math.floor(len(self.running) * self.profile.waiting_served_ratio)
            budget -= sum(g.reserved_tokens for g in self.running)
        joining, prefill, reserved = [], 0, 0
        for generation in self.queue:
            prefill += generation.prompt_tokens
            reserved += generation.reserved_tokens
            if prefill > self.max_batch_prefill_tokens or reserved > budget:
                break
            joining.append(generation)
        return tuple(joining) if len(joining) >= least else ()


class ContinuousBatching:
    """The scheduler in real time, on a thread of its own: `paced(words, ...)` yields a request's
    words as the GPU generates them, one token a word. For the load test, `generations` keeps every
    request's times (time.perf_counter) and `batch_sizes` each decode step's (time, batch size)."""

    def __init__(self, profile: GpuProfile = LLAMA2_7B_ON_A10G, max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
                 clock=time.perf_counter):
        self.profile = profile
        self.generations: list[Generation] = []
        self.batch_sizes: list[tuple[float, int]] = []
        self._scheduler = Scheduler(profile, max_input_tokens + TGI_PREFILL_MARGIN_TOKENS)
        self._clock = clock
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def paced(self, words: list[str], prompt_tokens: int, max_new_tokens: int, label: str = "") -> Iterator[str]:
        """`words` as the GPU generates them for a request of `prompt_tokens` asking for up to
        `max_new_tokens`; the last comes with the end of sequence. Leaving early (the client went)
        frees the request's place in the batch, as TGI drops a request whose client is gone."""
        generation = Generation(prompt_tokens, max_new_tokens, min(len(words) + 1, max_new_tokens), label)
        with self._changed:
            self._scheduler.submit(generation, self._clock())
            self.generations.append(generation)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="continuous-batching", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        try:
            for index, word in enumerate(words):
                self._wait_for(generation, min(index + 1, generation.tokens))
                yield word
            self._wait_for(generation, generation.tokens)
        finally:
            with self._changed:
                if not generation.over:
                    generation.cancelled = True

    def close(self) -> None:
        """Stop the GPU's thread: a request under way then gets its remaining words at once, unpaced."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _wait_for(self, generation: Generation, tokens: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: generation.generated >= tokens or self._closed)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (step := self._scheduler.next_step(self._clock())) is None:
                    self._changed.wait()
                if self._closed:
                    return
            time.sleep(step.seconds)  # the GPU at work
            with self._changed:
                if not step.joining:
                    self.batch_sizes.append((self._clock(), len(self._scheduler.running)))
                self._scheduler.complete(step, self._clock())
                self._changed.notify_all()
