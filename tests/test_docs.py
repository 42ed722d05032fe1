"""The documentation holds together: links, the docs site's nav, the README's front-page rules, the citation.

Every page (README.md, every Markdown file under docs/, models/README.md): each relative link leads to a file and each
#anchor to one of its headings. The docs site (mkdocs.yml, built with `mkdocs build --strict` in .ci/run): every page
under docs/ is in the nav or deliberately left out of it, every nav entry exists, and a page links only to files
under docs/ (MkDocs cannot serve the rest; source files are named as code spans instead).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs"
SITE_PAGES = sorted(DOCS_DIR.rglob("*.md"))
DOCS = [ROOT / "README.md", *SITE_PAGES, ROOT / "models" / "README.md"]
# Pages under docs/ that the nav leaves out on purpose (mkdocs.yml, not_in_nav): the records of measured runs, which
# the pages link to.
NOT_IN_NAV = ("results/",)
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


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists, relative to docs/ (read without a YAML parser: the test extra has none)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[re.search(r"^nav:\n", text, re.MULTILINE).end() :]
    nav = nav[: m.start()] if (m := re.search(r"^\S", nav, re.MULTILINE)) else nav
    return re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.md)\s*$", nav, re.MULTILINE)


def test_every_docs_page_is_in_the_nav_or_deliberately_left_out():
    listed = nav_pages()
    pages = [path.relative_to(DOCS_DIR).as_posix() for path in SITE_PAGES]
    assert len(listed) == len(set(listed)), f"pages listed twice: {sorted({p for p in listed if listed.count(p) > 1})}"
    assert not [page for page in listed if page not in pages], "nav entries without a page"
    left_out = [page for page in pages if page not in listed and not page.startswith(NOT_IN_NAV)]
    assert not left_out, f"pages under docs/ missing from mkdocs.yml's nav: {left_out}"
    for prefix in NOT_IN_NAV:
        assert f"/{prefix}**" in (ROOT / "mkdocs.yml").read_text(), f"mkdocs.yml's not_in_nav must list /{prefix}**"


@pytest.mark.parametrize("doc", SITE_PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_docs_pages_link_only_inside_docs(doc):
    outside = []
    for link in relative_links(doc):
        target = link.partition("#")[0]
        if target and not (doc.parent / target).resolve().is_relative_to(DOCS_DIR):
            outside.append(link)
    assert not outside, f"links leaving docs/ (name such files as code spans): {outside}"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_40 = "\n".join(lines[:40])
    quickstart = "python -m trainers.fit --flagfile configs/quickstart.cfg --data_dir=../shared/data/cifar10"
    assert f'pip install -e ".[cpu]" && {quickstart}' in first_40
    assert 'pip install -e ".[cpu,test]" && python -m pytest' in first_40
    # The project's local data copy appears in the first command only; every other example works anywhere.
    assert [line for line in lines if "../shared/data" in line] == [f'pip install -e ".[cpu]" && {quickstart}']
    text = "\n".join(lines)
    assert text.index("<!-- results-table -->") < text.index("<!-- /results-table -->")
    assert "https://arxiv.org/abs/1906.11235" in text


def test_license_and_citation_name_this_version():
    version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(version)}$", citation, re.MULTILINE)
    assert re.search(r"^license: MIT$", citation, re.MULTILINE)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license="MIT"' in (ROOT / "setup.py").read_text()


def test_every_library_module_has_an_api_reference():
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "invariance_tf").rglob("*.py")
    }
    rendered = {
        name for page in (DOCS_DIR / "api").glob("*.md") for name in re.findall(r"^::: (\S+)", page.read_text(), re.M)
    }
    assert not sorted(modules - rendered), "modules without a ::: line on a docs/api/ page"
    assert not sorted(rendered - modules), "::: lines naming no module"
