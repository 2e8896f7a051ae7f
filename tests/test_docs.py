"""The README and docs/: every relative link leads to a file of the repository (and a `#section`
to a heading of it), the README stays short with its first command near the top, and its test
command is the one CI runs."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "results").glob("*/summary.md"))]
README_MAX_LINES = 150
FIRST_COMMAND_BY_LINE = 40

# [text](target) and ![alt](target), not inside code
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def lines_outside_code(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of a Markdown file's lines outside fenced and indented code blocks."""
    kept, in_fence, previous_blank = [], False, True
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        indented_code = line.startswith("    ") and previous_blank and not line.lstrip().startswith(("-", "|"))
        if in_fence or indented_code:
            continue
        previous_blank = not line.strip()
        kept.append((number, line))
    return kept


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The `#anchors` of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    found, times = set(), {}
    for _, line in lines_outside_code(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(f"{base}-{times[base]}" if base in times else base)
            times[base] = times.get(base, 0) + 1
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in lines_outside_code(path):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):  # not inside inline code
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                links.append((number, target))
    return links


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    broken = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"line {number}: {target} (no such file)")
        elif not linked.resolve().is_relative_to(ROOT):
            broken.append(f"line {number}: {target} (outside the repository)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"line {number}: {target} (no such heading in {linked.name})")
    assert not broken, f"{path.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n## A `code` heading\n\nSee [top](#top), [code](#a-code-heading), "
                    "[gone](missing.md), [here](page.md#nowhere), `[not a link](x.md)`.\n\n"
                    "    [in a code block](y.md)\n", encoding="utf-8")
    targets = [target for _, target in relative_links(page)]
    assert targets == ["#top", "#a-code-heading", "missing.md", "page.md#nowhere"]
    assert anchors(page) == {"top", "a-code-heading"}


def test_readme_is_short_and_starts_with_a_command():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    commands = [number for number, line in enumerate(lines, start=1)
                if line.startswith("    ") and line.strip() and not line.lstrip().startswith(("-", "|"))]
    assert commands and commands[0] <= FIRST_COMMAND_BY_LINE, f"first command at line {commands[:1]}"


def test_readme_gives_the_test_command_that_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = next(line.strip() for line in ci if "python -m pytest" in line and not line.startswith("#"))
    readme_commands = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()
                       if line.startswith("    ")]
    assert command in readme_commands, f"README.md lacks CI's test command: {command}"
