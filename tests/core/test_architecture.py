"""ARCHITECTURE.md opens with one diagram of the packages, and it names every module exactly once.

The diagram is the page's first code block, before its first section. A line that names modules
starts with their package (``oir_cli/``, ``nodes/``, ``oir_core/``, ``web/``), so that one file name
in two packages (``progress.py``) stays unambiguous; a module added, renamed or removed without the
diagram following fails here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"oir_core": "*.py", "nodes": "*.py", "oir_cli": "*.py", "web": "*.js"}
MODULE = re.compile(r"\b\w+\.(?:py|js)\b")
PACKAGE_LINE = re.compile(r"^(oir_core|nodes|oir_cli|web)/\s")


def opening_diagram(markdown: str) -> str:
    """The page's first code block; it must come before the first ``##`` section."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    fences = [i for i, token in enumerate(tokens) if token.type == "fence"]
    sections = [i for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    assert fences, "ARCHITECTURE.md has no code block (the diagram)"
    assert not sections or fences[0] < sections[0], "the diagram must open ARCHITECTURE.md"
    return tokens[fences[0]].content


def named_modules(diagram: str) -> Counter[str]:
    """``package/file`` -> how often the diagram names it."""
    named: Counter[str] = Counter()
    for line in diagram.splitlines():
        found = MODULE.findall(line)
        package = PACKAGE_LINE.match(line)
        if found and package is None:
            raise AssertionError(f"modules named on a line that does not start with a package: {line!r}")
        for name in found:
            named[f"{package.group(1)}/{name}"] += 1  # type: ignore[union-attr]
    return named


def package_modules() -> list[str]:
    return sorted(
        f"{package}/{path.relative_to(REPO / package).as_posix()}"
        for package, pattern in PACKAGES.items()
        for path in (REPO / package).rglob(pattern)
        if "__pycache__" not in path.parts
    )


def test_the_reading_of_a_diagram_line() -> None:
    text = "  a spec.yaml\nnodes/    progress.py · types.py\noir_cli/  progress.py (workflows/*.api.json)\n"
    assert named_modules(text) == Counter(["nodes/progress.py", "nodes/types.py", "oir_cli/progress.py"])
    with pytest.raises(AssertionError, match="does not start with a package"):
        named_modules("     ComfyUI runs comfy_host.py\n")
    with pytest.raises(AssertionError, match="must open"):
        opening_diagram("# Title\n\n## 1. Section\n\n```\nweb/  a.js\n```\n")


def test_the_opening_diagram_names_every_module_once() -> None:
    named = named_modules(opening_diagram((REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")))
    modules = package_modules()
    assert len(modules) > 40  # the packages were found
    assert {m: named[m] for m in modules if named[m] != 1} == {}  # missing (0) or repeated
    assert sorted(set(named) - set(modules)) == []  # names of modules that do not exist
