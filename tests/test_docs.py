"""The documentation's relative links lead somewhere: each file exists and each #anchor is one of its headings."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "models" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return frozenset(github_anchor(heading) for heading in HEADING.findall(text))


def relative_links(path: Path) -> list[str]:
    return [link for link in LINK.findall(path.read_text()) if not re.match(r"[a-z]+:", link)]


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("Why A.T.+KL does not pull ahead of A.T. here: one factor at a time") == (
        "why-atkl-does-not-pull-ahead-of-at-here-one-factor-at-a-time"
    )
    assert github_anchor("7. What fidelity costs (measured)") == "7-what-fidelity-costs-measured"
    assert github_anchor("CIFAR-10, CPU scale") == "cifar-10-cpu-scale"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_lead_to_a_file_and_heading(doc):
    broken = []
    for link in relative_links(doc):
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading with anchor #{anchor} in {path.name}")
    assert not broken, "\n".join(broken)
