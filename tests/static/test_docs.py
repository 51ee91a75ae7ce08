"""The README and the pages under docs/: every relative link resolves (the file, and the
heading its #anchor names, as GitHub makes anchors), the README stays short, each page stays
readable in one sitting, and docs/configuration.md is what its generator writes now."""

import re
from functools import cache
from pathlib import Path

import pytest

from orders_stack import configdoc

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose(page.read_text()):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    text = "\n".join(re.sub(r"`[^`]*`", "", line) for line in prose(page.read_text()))
    return LINK.findall(text)


def test_the_link_checker_sees_links_and_anchors() -> None:
    readme = ROOT / "README.md"
    assert "docs/api.md" in links(readme)
    assert slug("Coming from the tutorial") == "coming-from-the-tutorial"
    assert (
        slug("Integrating: status events, the `AsyncAPI` contract")
        == "integrating-status-events-the-asyncapi-contract"
    )
    assert "coming-from-the-tutorial" in anchors(readme)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines < 200, f"README.md has {lines} lines: move the detail to a page under docs/"


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_each_page_is_at_most_300_lines(page: Path) -> None:
    lines = len(page.read_text().splitlines())
    assert lines <= 300, f"{page.relative_to(ROOT)} has {lines} lines: split it along its topics"


def test_the_configuration_page_is_what_its_generator_writes() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == configdoc.render(), "docs/configuration.md is out of date: run `make config-doc`"


def test_the_configuration_page_lists_every_variable() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    listed = set(re.findall(r"^\| `([A-Z_0-9]+)` \|", page, re.MULTILINE))
    every = {
        name.upper()
        for settings in [*configdoc.SERVICES.values(), *(group for _, group in configdoc.GROUPS)]
        for name in settings.model_fields
    }
    assert listed == every
