"""The capacity table of docs/capacity.md: for each documented instance type, model and container,
how many users a stage serves with a p95 time to first token of 2 s or less, and what 1,000 turns
cost at that load. Computed from the load test's curve (bench/load_curve.json, which
`make load LOAD_ARGS="--save bench/load_curve.json"` writes) and infrastructure/cost.py's prices:

    python -m bench.capacity_table       (also `make load LOAD_ARGS=--table`)

The curve is of one copy of the model (one instance): a stage of n instances serves n times the
users (the endpoint routes each request to the copy with the fewest outstanding, and the workers
are n times as many), at n times the instance cost.
"""

import dataclasses
import json
import sys
from pathlib import Path

from infrastructure import capacity, cost

ROOT = Path(__file__).resolve().parent.parent
CURVE = ROOT / "bench" / "load_curve.json"
TTFT_TARGET_SECONDS = 2.0
# The endpoint with its default autoscaling_max_instances, and without autoscaling.
INSTANCES = (1, 2)


@dataclasses.dataclass(frozen=True)
class Setup:
    """A documented way to serve the model, and the fake GPU's profile the load test measured it with."""

    instance_type: str
    model: str
    container: str
    profile: str


SETUPS = (
    Setup("ml.g5.2xlarge", "Llama 2 7B Chat, fp16", "TGI 2.3.1 (Hugging Face LLM DLC)",
          "Llama 2 7B fp16 on one A10G (ml.g5.2xlarge), TGI"),
)


@dataclasses.dataclass(frozen=True)
class Capacity:
    """One copy's users at the target and its turns a minute there; `reached`: whether the curve
    passed the target (if not, the users are at least these)."""

    users: float
    turns_per_minute: float
    reached: bool


def crossing(levels: list[dict], target: float = TTFT_TARGET_SECONDS) -> tuple[dict | None, dict | None]:
    """The last level whose p95 time to first token is within `target`, and the first past it
    (None where there is none)."""
    within = None
    for level in sorted(levels, key=lambda level: level["users"]):
        if level["ttft_p95"] is not None and level["ttft_p95"] > target:
            return within, level
        within = level
    return within, None


def at_target(levels: list[dict], target: float = TTFT_TARGET_SECONDS) -> Capacity:
    """Where the curve's p95 time to first token meets `target`, linearly between the last level
    within it and the first past it."""
    within, past = crossing(levels, target)
    if past is None:
        return Capacity(within["users"], within["turns_per_minute"], reached=False)
    if within is None:
        return Capacity(0, 0, reached=True)
    share = (target - within["ttft_p95"]) / (past["ttft_p95"] - within["ttft_p95"])
    return Capacity(within["users"] + share * (past["users"] - within["users"]),
                    within["turns_per_minute"] + share * (past["turns_per_minute"] - within["turns_per_minute"]),
                    reached=True)


def dollars_per_1000_turns(turns_per_minute: float, instances: int, memory_gb: float) -> float:
    """Always on, with this load all month: the month's bill over its turns."""
    turns = turns_per_minute * 60 * cost.HOURS_A_MONTH
    bill = cost.bill(cost.scenario("always on", round(turns), memory_gb, instances))
    return sum(bill.values()) / turns * 1000


def table(curve: dict, memory_gb: float | None = None) -> str:
    if memory_gb is None:
        config = json.loads((ROOT / ".chalice" / "config.json").read_text())
        memory_gb = cost.lambda_memory_gb(config, "prod")
    header = ["instance type", "model", "container", "instances", "workers", "users at p95 first token ≤ 2 s",
              "turns a minute", "$ per 1,000 turns"]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for setup in SETUPS:
        if curve["model"] != setup.profile:
            continue
        one = at_target(curve["levels"])
        at_least = "" if one.reached else "≥ "
        # The curve's workers are the whole stage's; they are one copy's generations only because
        # make run plays a stage of one instance (its WORKER_CONCURRENCY is 1 x generations_per_copy).
        generations_per_copy = curve["worker_concurrency"]
        for instances in INSTANCES:
            turns = one.turns_per_minute * instances
            workers = capacity.worker_concurrency(instances, generations_per_copy)
            cells = [setup.instance_type, setup.model, setup.container, str(instances), str(workers),
                     f"{at_least}{int(one.users * instances)}", f"{at_least}{turns:.0f}",
                     f"{dollars_per_1000_turns(turns, instances, memory_gb):.2f}" if turns else "-"]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    print(table(json.loads(CURVE.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
