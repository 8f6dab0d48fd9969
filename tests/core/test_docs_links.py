"""Every relative link of the repository's Markdown pages leads somewhere: the file exists and, with
``#anchor``, one of its headings has that anchor (GitHub's rule: lower case, punctuation dropped,
spaces to hyphens, ``-1``, ``-2`` for repeats). Links are read by a Markdown parser (markdown-it-py),
so code blocks and inline code never count as links.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        REPO / "README.md",
        REPO / "ARCHITECTURE.md",
        REPO / "benchmarks" / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]
)
PARSER = MarkdownIt("commonmark").enable("table")


def _walk(tokens: list[Token]) -> list[Token]:
    flat: list[Token] = []
    for token in tokens:
        flat.append(token)
        flat.extend(_walk(token.children or []))
    return flat


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    tokens = PARSER.parse(page.read_text(encoding="utf-8"))
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        words = [child for child in inline.children or [] if child.type in ("text", "code_inline")]
        text = "".join(child.content for child in words)
        base = github_anchor(text)
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(page: Path) -> list[str]:
    tokens = _walk(PARSER.parse(page.read_text(encoding="utf-8")))
    targets = [t.attrGet("href") for t in tokens if t.type == "link_open"]
    targets += [t.attrGet("src") for t in tokens if t.type == "image"]
    return [str(t) for t in targets if t]


def test_the_pages_exist() -> None:
    assert all(page.is_file() for page in PAGES)
    assert len(PAGES) >= 10, [p.name for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # a web address: not this repository's to check offline
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not path.exists():
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            broken.append(f"{target}: no file {shown}")
        elif parts.fragment and (path.suffix != ".md" or parts.fragment not in anchors(path)):
            broken.append(f"{target}: no heading with anchor #{parts.fragment} in {path.name}")
    assert broken == [], broken


def test_the_anchor_rule_on_known_headings() -> None:
    """GitHub's documented examples: punctuation goes, spaces become hyphens, case folds."""
    assert github_anchor("9. ComfyUI hosts: the backend audit") == "9-comfyui-hosts-the-backend-audit"
    assert github_anchor("Fidelity: what `official` means") == "fidelity-what-official-means"
    assert github_anchor("Exit codes") == "exit-codes"


def test_run_all_rewrites_only_the_marked_table_of_the_results_page() -> None:
    """``benchmarks/run_all.py`` puts its table between the markers of ``docs/results.md``: the rest
    of the page (the explanations, the GPU table) stays byte for byte, and the markers stay for the
    next run."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import benchlib
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    page = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert page.count(benchlib.RESULTS_BEGIN) == 1 and page.count(benchlib.RESULTS_END) == 1
    table = "| metric | measured | target |\n|---|---|---|\n| m | 1 | 2 |"
    new = benchlib.replace_marked_block(page, f"Machine: X\n\n{table}")
    before, after = page.split(benchlib.RESULTS_BEGIN)[0], page.split(benchlib.RESULTS_END)[1]
    assert new.startswith(before + benchlib.RESULTS_BEGIN) and new.endswith(benchlib.RESULTS_END + after)
    assert "| m | 1 | 2 |" in new and "Machine: X" in new
    again = benchlib.replace_marked_block(new, "Machine: Y")
    assert again == benchlib.replace_marked_block(page, "Machine: Y")
    with pytest.raises(ValueError, match="block to replace"):
        benchlib.replace_marked_block("no markers here", "table")
