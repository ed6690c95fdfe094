"""Every curl of the README, run with bash as written, against `make run`.

The README's bash blocks that hold a `curl` run in order in one shell, as a reader runs them in
one terminal, against one launcher on a free port (its URL in place of http://127.0.0.1:8000;
`make -s token` reads PORT). Each block is followed by a json block with the answer of each of
its curls, one a line: every curl must answer 2xx JSON of exactly that shape.
"""

import json
import os
import re
import subprocess

import pytest

from local.launcher import Launcher
from local.net import free_port
from local.settings import ROOT

README = ROOT / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Each curl's answer goes to a file of its own, with its status and content type beside it.
# `make` is told its install markers are up to date: this test checks the README's commands,
# not the installation (in a git worktree sharing .venv the markers look stale, and make would
# reinstall into the shared venv).
PREAMBLE = """\
set -euo pipefail
calls=0
curl() {
  calls=$((calls + 1))
  command curl "$@" --show-error --output "$ANSWERS/$calls.body" \\
    --write-out '%{http_code} %{content_type}' > "$ANSWERS/$calls.status"
}
make() { command make -o .venv/.installed -o .venv/.deploy-installed -o node_modules/.installed "$@"; }
"""


def readme_curls() -> list[tuple[str, list]]:
    """Each bash block with a curl, and the answers the json block after it shows, in order."""
    blocks = BLOCK.findall(README.read_text())
    documented = []
    for (language, code), (next_language, answers) in zip(blocks, [*blocks[1:], ("", "")], strict=True):
        if language == "bash" and re.search(r"\bcurl\b", code):
            assert next_language == "json", f"no json block shows the answers of:\n{code}"
            documented.append((code, [json.loads(line) for line in answers.splitlines() if line.strip()]))
    return documented


def same_shape(actual, documented) -> bool:
    """The same keys at every level, lists of elements shaped like the documented first one,
    and values of the same JSON type."""
    if isinstance(documented, dict):
        return (isinstance(actual, dict) and actual.keys() == documented.keys()
                and all(same_shape(actual[key], documented[key]) for key in documented))
    if isinstance(documented, list):
        return isinstance(actual, list) and all(same_shape(item, documented[0]) for item in actual if documented)
    if isinstance(documented, bool) or documented is None:
        return type(actual) is type(documented)
    if isinstance(documented, int | float):
        return isinstance(actual, int | float) and not isinstance(actual, bool)
    return type(actual) is type(documented)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    launcher = Launcher(free_port(), folder / "data", folder / "run.log")
    try:
        yield launcher
    finally:
        launcher.stop()


def test_the_readme_has_signed_in_curls_for_make_run():
    documented = readme_curls()
    assert documented, "the README shows no curl"
    assert "TOKEN=$(make -s token)" in documented[0][0]
    for code, answers in documented:
        assert DOCUMENTED_URL in code, f"this curl does not talk to make run at {DOCUMENTED_URL}:\n{code}"
        assert len(answers) == len(re.findall(r"\bcurl\b", code)), f"one json line per curl:\n{code}"


def test_every_readme_curl_answers_json_of_the_documented_shape(service, tmp_path):
    documented = readme_curls()
    script = PREAMBLE + "\n".join(code.replace(DOCUMENTED_URL, service.url) for code, _ in documented)
    env = {**os.environ, "PORT": service.url.rsplit(":", 1)[1], "ANSWERS": str(tmp_path)}

    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, f"the README's commands failed:\n{result.stderr}\nmake run's log: {service.log_path}"
    expected = [answer for _, answers in documented for answer in answers]
    assert len(list(tmp_path.glob("*.status"))) == len(expected)
    for call, shape in enumerate(expected, start=1):
        status, content_type = (tmp_path / f"{call}.status").read_text().split(" ", 1)
        body = json.loads((tmp_path / f"{call}.body").read_text())
        assert 200 <= int(status) < 300, f"curl {call} answered {status}: {body}"
        assert content_type.startswith("application/json"), content_type
        assert same_shape(body, shape), f"curl {call} answered {body}, not shaped like the README's {shape}"
