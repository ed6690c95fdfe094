"""The load test's users and arithmetic, without make run: the distributions it draws from, its
percentiles, the knee, and the capacity table that docs/capacity.md shows."""

import json
import random
import re
import statistics
from pathlib import Path

import pytest

from bench import capacity_table, load_test
from chalicelib.errors import InvalidRequest
from chalicelib.settings import Settings
from chalicelib.token_bounds import fixed_prompt_tokens
from infrastructure import cost
from local.llama2_tokenizer import Llama2Tokenizer
from local.settings import stage_environment

ROOT = Path(__file__).resolve().parent.parent


def level(users: int, ttft_p95: float | None, turns_per_minute: float) -> dict:
    return {"users": users, "ttft_p95": ttft_p95, "turns_per_minute": turns_per_minute}


def test_lengths_are_long_tailed_with_lmsys_chat_1ms_means():
    rng = random.Random(7)
    questions = [load_test.lognormal(rng, load_test.QUESTION_TOKENS_MEAN) for _ in range(40_000)]
    answers = [load_test.lognormal(rng, load_test.ANSWER_TOKENS_MEAN) for _ in range(40_000)]

    assert statistics.fmean(questions) == pytest.approx(69.5, rel=0.03)
    assert statistics.fmean(answers) == pytest.approx(214.5, rel=0.03)
    assert statistics.median(answers) < 0.7 * statistics.fmean(answers)  # a long tail
    plans = [load_test.TurnPlan.draw(rng, "t", "websocket", 300, 255) for _ in range(2000)]
    assert max(plan.answer_tokens for plan in plans) == 255 and max(plan.question_tokens for plan in plans) == 300
    assert min(plan.question_tokens for plan in plans) >= 1


def test_questions_are_at_most_what_the_stage_accepts():
    """make run's stage: a 1,536-token prompt budget, counted as UTF-8 bytes with the system prompt."""
    settings = Settings.model_validate(stage_environment())
    longest = load_test.longest_question(settings)
    marker = "[n200u199t199] "

    assert 150 < longest < 300
    fixed_prompt_tokens(settings, marker + " ".join([max(load_test.WORDS, key=len)] * longest))
    with pytest.raises(InvalidRequest):
        fixed_prompt_tokens(settings, marker + " ".join([max(load_test.WORDS, key=len)] * (longest + 5)))


def test_think_time_is_reading_the_answer_then_typing_the_next_question():
    # 200 tokens are 150 words: 37.8 s at 238 words a minute; 40 tokens, 30 words: 34.6 s at 52.
    assert load_test.think_seconds(200, 40) == pytest.approx(150 / 238 * 60 + 30 / 52 * 60)


def test_the_fake_models_words_are_one_llama2_token_each():
    """So that an answer of n words is n tokens, at the GPU's pace per token."""
    tokenizer = Llama2Tokenizer()
    try:
        text = load_test.text_of(500, random.Random(3))
        assert tokenizer.count(text) == 500
        assert all(tokenizer.count(word) == 1 for word in load_test.WORDS)
    finally:
        tokenizer.close()


def test_percentiles_are_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert load_test.percentile(values, 0.5) == 50 and load_test.percentile(values, 0.95) == 95
    assert load_test.percentile([3.0], 0.95) == 3 and load_test.percentile([], 0.5) is None


def test_the_knee_is_where_the_line_between_the_levels_either_side_crosses_2_s():
    levels = [level(10, 0.8, 9), level(50, 1.4, 40), level(100, 3.4, 60), level(150, 9.0, 61)]

    within, past = capacity_table.crossing(levels)
    found = capacity_table.at_target(levels)

    assert (within["users"], past["users"]) == (50, 100)
    assert found.reached and found.users == pytest.approx(65) and found.turns_per_minute == pytest.approx(46)
    unreached = capacity_table.at_target(levels[:2])
    assert (unreached.users, unreached.turns_per_minute, unreached.reached) == (50, 40, False)
    assert capacity_table.crossing([level(1, 2.5, 1)]) == (None, level(1, 2.5, 1))


def test_the_capacity_table_scales_one_copy_by_the_instances_and_prices_them_always_on():
    curve = {"model": capacity_table.SETUPS[0].profile, "worker_concurrency": 8,
             "levels": [level(50, 1.0, 30), level(100, 3.0, 50)]}
    rows = capacity_table.table(curve, memory_gb=0.5).splitlines()[2:]

    one, two = (row.strip("| ").split(" | ") for row in rows)
    assert one[3:7] == ["1", "8", "75", "40"] and two[3:7] == ["2", "16", "150", "80"]
    # An always-on instance carries 40 turns a minute, 1,752,000 turns a month: its $1,105.95 is
    # 63 cents of every 1,000 turns' cost; the turns' own Lambda, API Gateway, DynamoDB... the rest.
    month = cost.bill(cost.scenario("always on", 1_752_000, 0.5))
    assert month["SageMaker instance"] == pytest.approx(1105.95)
    assert float(one[7]) == pytest.approx(sum(month.values()) / 1752, abs=0.006) and float(one[7]) > 0.63
    # Twice the instances and the turns: about the same (more of Cognito's users beyond its free 10,000).
    assert float(two[7]) == pytest.approx(float(one[7]), abs=0.05)


def test_docs_capacity_table_is_the_one_the_saved_curve_gives():
    """docs/capacity.md's table comes from bench/load_curve.json (`python -m bench.capacity_table`)."""
    curve = json.loads(capacity_table.CURVE.read_text())
    documented = re.search(r"^\| instance type .*?(?=\n\n)", (ROOT / "docs" / "capacity.md").read_text(),
                           re.MULTILINE | re.DOTALL)
    assert documented and documented[0] == capacity_table.table(curve)
    assert [level["users"] for level in curve["levels"]][:5] == list(load_test.REPORTED_USERS)


def test_docs_measured_curve_is_the_report_of_the_saved_curve():
    """docs/capacity.md's curve is `load_test.report` of bench/load_curve.json, without its header
    sentence and its knee line (the prose states both); users first, then the turns each level
    rests on."""
    curve = json.loads(capacity_table.CURVE.read_text())
    documented = re.search(r"^Measured on .*?\n```\n(.*?)\n```", (ROOT / "docs" / "capacity.md").read_text(),
                           re.MULTILINE | re.DOTALL)
    lines = load_test.report(curve).splitlines()

    assert documented and documented[1].splitlines() == lines[1:-1]
    assert lines[1].split()[:2] == ["users", "turns"]
    assert [row.split()[1] for row in lines[2:-1]] == [str(level["turns"]) for level in curve["levels"]]
