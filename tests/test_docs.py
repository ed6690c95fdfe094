"""The documentation stays honest: what README.md and docs/*.md name exists.

- every `make <target>` they name in code is a target of the Makefile;
- every repository path they name in backticks exists (or is one the tools make, by .gitignore);
- every file of the code is on the map, docs/layout.md;
- every setting of `Settings` is in docs/settings.md, by its environment variable, with its default;
- every relative link resolves, anchors included, and the README links to every docs/ file.

Unit-level: it reads files (and `git ls-files`), nothing else.
"""

import fnmatch
import json
import re
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Named by the docs, being built by other engineers now: the load test.
# Remove each entry when it lands: this test fails once an entry exists, so that the set never
# hides a real name.
EXPECTED_SOON: set[str] = set()

# What a backticked name must end with to be taken for a file even without a folder.
FILE_SUFFIXES = (".py", ".md", ".json", ".txt", ".html", ".toml", ".ini", ".mjs", ".sh", ".yml", ".yaml")
# Tracked files the map (docs/layout.md) need not name: the tests have docs/testing.md, and these.
OFF_THE_MAP = ("tests/", "infrastructure/tests/", "docs/", "README.md", ".gitignore")

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MAKE_COMMAND = re.compile(r"(?<![\w./-])make\s+(?:-\S+\s+)*([A-Za-z][\w.-]*)(?!\S*=)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def name(document: Path) -> str:
    return str(document.relative_to(ROOT))


def fenced_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return FENCE.sub("", text)


def inline_code(text: str) -> list[str]:
    return INLINE_CODE.findall(prose(text))


def makefile_targets() -> set[str]:
    """The Makefile's targets: names before a ':' at the start of a line (not a ':=' assignment)."""
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        if found := re.match(r"^([^\s:#=][^:#=]*?)\s*:(?!=)", line):
            targets.update(found[1].split())
    return targets


def make_targets_named(text: str) -> set[str]:
    """Every `make <target>` in the code of a document: its inline code and code blocks."""
    code = inline_code(text) + fenced_blocks(text)
    return {target for snippet in code for target in MAKE_COMMAND.findall(snippet)}


@cache
def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    return result.stdout.splitlines()


def ignored_by_git(path: str) -> bool:
    """Whether .gitignore covers `path` or a folder above it: output the tools make (vendor/, build/...)."""
    patterns = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = path.strip("/").split("/")
    for pattern in patterns:
        anchored = pattern.strip("/")
        if "/" in anchored:
            if any("/".join(parts[:i]) == anchored for i in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatch(part, anchored) for part in parts):
            return True
    return False


def looks_like_a_repository_path(code: str) -> bool:
    """`chalicelib/auth.py`, `tests/e2e/`, `.chalice/config.json`, `app.py`: yes. A URL, a route,
    an ARN, a template with placeholders, a command, or `owner/name` outside the repository: no."""
    if re.search(r"[\s<>*${}:?=@,;'\"|]", code) or code.startswith(("/", "~", "-", ".../", "../")):
        return False
    if code.endswith(FILE_SUFFIXES):
        return True
    top = code.split("/", 1)[0]
    return "/" in code and (top in {p.split("/", 1)[0] for p in tracked_files()} or ignored_by_git(top))


def path_exists(code: str) -> bool:
    path = code.rstrip("/")
    if (ROOT / path).exists() or ignored_by_git(path):
        return True
    # A bare file name (`index.html`) names a tracked file wherever it is.
    return "/" not in path and any(p.rsplit("/", 1)[-1] == path for p in tracked_files())


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(document.read_text())):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def test_there_is_documentation_to_check():
    assert len(documents()) > 10
    assert makefile_targets() >= {"run", "test", "token", "bench", "config", "vendor"}


@pytest.mark.parametrize("document", documents(), ids=name)
def test_every_make_target_named_exists(document):
    named = make_targets_named(document.read_text())
    missing = {t for t in named if t not in makefile_targets() and f"make {t}" not in EXPECTED_SOON}
    assert not missing, f"{name(document)} names make targets the Makefile lacks: {sorted(missing)}"


@pytest.mark.parametrize("document", documents(), ids=name)
def test_every_repository_path_named_exists(document):
    paths = {code for code in inline_code(document.read_text()) if looks_like_a_repository_path(code)}
    missing = {p for p in paths if not path_exists(p) and p not in EXPECTED_SOON}
    assert not missing, f"{name(document)} names paths that do not exist: {sorted(missing)}"


def test_paths_are_recognised_and_checked():
    """The rules above on the kinds of names the docs use: a broken rule would check nothing."""
    assert looks_like_a_repository_path("chalicelib/auth.py")
    assert looks_like_a_repository_path("tests/e2e/")
    assert looks_like_a_repository_path(".chalice/config.json")
    assert looks_like_a_repository_path("app.py")
    assert looks_like_a_repository_path("chalicelib/no_such_module.py")
    assert not path_exists("chalicelib/no_such_module.py")
    assert not path_exists("no_such_file.md")
    assert path_exists("vendor/") and path_exists(".chalice/deployed/dev.json")  # made by the tools
    for other in ("llama2-chatbot/hf-token", "meta-llama/Llama-2-7b-chat-hf", "GET /sessions/S/messages",
                  "/aws/lambda/llama2-chatbot-dev", "https://example.com/a.md", "~rate/<sub>",
                  ".chalice/policy-<stage>.json", "make -s token"):
        assert not looks_like_a_repository_path(other), other


def test_every_file_of_the_code_is_on_the_map():
    """Each file by name, or a folder of files shipped as they are (named with its trailing '/'), in
    a row of the map's tables: the prose around them names whole layers."""
    rows = "\n".join(line for line in (DOCS / "layout.md").read_text().splitlines() if line.startswith("|"))
    mapped = set(inline_code(rows))
    folders = tuple(name for name in mapped if name.endswith("/"))
    code_files = [p for p in tracked_files()
                  if not p.startswith(OFF_THE_MAP) and not p.endswith("__init__.py")]
    assert code_files, "git ls-files found no code"
    missing = [p for p in code_files if p not in mapped and not p.startswith(folders)]
    assert not missing, f"docs/layout.md does not name: {missing}"


def test_nothing_expected_soon_exists_yet():
    """Once a name in EXPECTED_SOON exists, the docs name it rightly: take it out of the set."""
    landed = {entry for entry in EXPECTED_SOON
              if entry.removeprefix("make ") in makefile_targets() or (ROOT / entry).exists()}
    assert not landed, f"these have landed; remove them from EXPECTED_SOON in tests/test_docs.py: {sorted(landed)}"


def environment_names(field) -> list[str]:
    names = [field.alias]
    if isinstance(field.validation_alias, AliasChoices):
        names += [choice for choice in field.validation_alias.choices if choice not in names]
    return names


def settings_table() -> dict[str, str]:
    """docs/settings.md's rows: the variable (first cell) and its default (second cell)."""
    rows = {}
    for line in (DOCS / "settings.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and (found := re.fullmatch(r"`([A-Z0-9_]+)`", cells[0])):
            rows[found[1]] = cells[1]
    return rows


def documented_default(field) -> str:
    if field.default_factory is not None:  # one that follows other settings: with theirs at their defaults
        defaults = {name: other.default for name, other in Settings.model_fields.items()
                    if other.default_factory is None}
        return json.dumps(field.get_default(call_default_factory=True, validated_data=defaults))
    if field.default is PydanticUndefined:
        return "required"
    if field.default is None:
        return "none"
    if isinstance(field.default, list):
        return json.dumps(field.default)
    return str(field.default)


@pytest.mark.parametrize("field_name", list(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(field_name):
    field = Settings.model_fields[field_name]
    rows = settings_table()
    assert field.alias in rows, f"docs/settings.md has no row for {field.alias} ({field_name})"
    assert rows[field.alias].strip("`\"") == documented_default(field), (
        f"docs/settings.md gives {field.alias} the default {rows[field.alias]}; "
        f"chalicelib/settings.py has {documented_default(field)}")
    text = (DOCS / "settings.md").read_text()
    for other in environment_names(field)[1:]:
        assert f"`{other}`" in text, f"docs/settings.md does not name {other}, which {field.alias} also reads"


@pytest.mark.parametrize("document", documents(), ids=name)
def test_every_relative_link_resolves(document):
    broken = []
    for target in LINK.findall(prose(document.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{name(document)} has links that do not resolve: {broken}"


def test_the_readme_links_every_docs_file():
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for target in LINK.findall(README.read_text())}
    unlinked = [name(doc) for doc in sorted(DOCS.glob("*.md")) if doc.resolve() not in linked]
    assert not unlinked, f"README.md does not link: {unlinked}"


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 200
