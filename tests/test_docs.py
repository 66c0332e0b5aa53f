"""The documentation stays true to the code: the generated reference pages match
what ``gateway.docsgen`` renders now, every ``gateway`` command is in the command
table, and the README stays a short front door."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from gateway import docsgen

ROOT = docsgen.ROOT
FIX = f"run `{docsgen.REGENERATE}` and commit the result"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return docsgen.render_pages()


def test_generated_pages_are_current(pages: dict[str, str]) -> None:
    problems = []
    for path, text in sorted(pages.items()):
        file = ROOT / path
        if not file.is_file():
            problems.append(f"{path} is missing")
            continue
        committed = file.read_text(encoding="utf-8")
        if committed != text:
            diff = difflib.unified_diff(
                committed.splitlines(), text.splitlines(), f"{path} (file)", "(code)", lineterm=""
            )
            problems.append("\n".join(list(diff)[:40]))
    assert not problems, f"generated docs differ from the code; {FIX}:\n" + "\n\n".join(problems)


def test_generation_is_deterministic(pages: dict[str, str]) -> None:
    assert docsgen.render_pages() == pages


def test_generated_pages_are_in_the_site_nav(pages: dict[str, str]) -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for path in pages:
        assert path.removeprefix("docs/") in nav, f"{path} is not in mkdocs.yml's nav"


def test_check_reports_a_stale_page(tmp_path: Path, pages: dict[str, str]) -> None:
    for path, text in pages.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    stale = sorted(pages)[0]
    (tmp_path / stale).write_text("outdated\n", encoding="utf-8")
    assert docsgen.stale_pages(tmp_path, pages) == [stale]
    assert docsgen.main(["--check", "--root", str(tmp_path)]) == 1


def test_every_cli_command_is_in_the_command_table() -> None:
    table = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [cmd for cmd in docsgen.cli_commands() if f"`{cmd}" not in table]
    assert not missing, f"docs/cli.md's table lacks: {missing}"


def test_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail into docs/"
    found = re.findall(r"\bissues?\s*#?\d+", readme, flags=re.IGNORECASE)
    assert not found, f"README.md names internal issue numbers: {found}"
