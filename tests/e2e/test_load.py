"""A short load test (5 users, a few seconds) against `make run` with the batching fake model, to
keep `make load` working; the full one runs in `make bench` (bench/load_test.py)."""

from bench import capacity_table, load_test


def test_five_users_are_answered_on_every_path_and_the_figures_add_up():
    curve = load_test.measure([5], seconds=5, warm_up=0, think_scale=0.02)

    (level,) = curve["levels"]
    assert curve["worker_concurrency"] == 8
    assert level["users"] == 5 and level["turns"] >= 5 and level["errors"] == {}
    # Every user's first turn starts within the 5 s, on the paths PATHS gives them: all three.
    for path in ("ttft", "rest_answer", "async_answer", "to_model_call", "model_queue"):
        assert 0 <= level[f"{path}_p50"] <= level[f"{path}_p95"], path
    assert level["turns_per_minute"] > 0 and level["tokens_per_second"] > 0
    report = load_test.report(curve)
    assert report.splitlines()[2].split()[:2] == ["5", str(level["turns"])] and "knee:" in report
    assert len(capacity_table.table(curve).splitlines()) == 2 + len(capacity_table.INSTANCES)
