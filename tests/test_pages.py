"""Every generated span of the documentation equals what its committed records render (`python -m benchmarks.pages`).

The pages' measured numbers sit between cog markers whose code reads docs/results; re-rendering a page in memory
must give the committed page back, so a record changed without re-rendering (or a number edited by hand inside a
generated span) fails here with a diff.
"""

from __future__ import annotations

import difflib
import re
import shutil

import pytest

from benchmarks import pages

cogapp = pytest.importorskip("cogapp", reason="the pages are rendered with cogapp (the `test` extra)")


@pytest.mark.parametrize("page", pages.PAGES)
def test_page_matches_its_records(page):
    path = pages.ROOT / page
    committed = path.read_text()
    assert "[[[cog" in committed, f"{page} has no generated span"
    rendered = cogapp.Cog().process_string(committed, str(path))
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            rendered.splitlines(keepends=True),
            f"{page} (committed)",
            f"{page} (rendered from docs/results)",
        )
    )
    assert not diff, f"{page} disagrees with its records; run `python -m benchmarks.pages`:\n{diff}"


def test_readme_results_table_links_every_run_it_shows():
    """Every row of the CPU regime, each with its runs (the G-ResNet row: the fair G-row once it has run)."""
    text = pages.readme_results_table()
    for row in {row for row, _ in pages.regime_runs()}:
        runs = pages.readme_runs(row)
        assert runs, row
        for folder, run, _ in runs:
            assert f"results/{folder}/{run}/metrics.json" in text
    assert (pages.RESULTS / pages.REGIME / "table.md").exists()


def test_formatting_of_differences():
    entry = {"difference": -0.017, "ci": [-0.037, 0.003], "mcnemar_p": 3.78e-5, "b_only": 205, "a_only": 129}
    assert pages.diff(entry) == "−1.7 [−3.7, +0.3]"
    assert pages.diff_full(entry) == "−1.7 [−3.7, +0.3], p = 4e-5 (205 / 129)"
    assert pages.p_value(0.0064) == "0.0064"
    assert pages.p_value(0.28) == "0.28"


def test_readme_code_layout_names_every_module():
    """Every Python module of the library, the commands and the benchmarks has a row, or is named in its package's."""
    readme = (pages.ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| (.+) \|$", readme[readme.index("## Code layout") :], re.MULTILINE))
    missing = []
    for package in (*pages.LISTED_MODULES, *pages.SUMMARISED_PACKAGES):
        for path in sorted((pages.ROOT / package).rglob("*.py")):
            *parents, module = path.relative_to(pages.ROOT).with_suffix("").parts
            parent = ".".join(parents)
            if module == "__init__":
                if parent not in pages.LISTED_MODULES and parent not in rows:
                    missing.append(parent)
            elif f"{parent}.{module}" not in rows and f"`{module}`" not in rows.get(parent, ""):
                missing.append(f"{parent}.{module}")
    assert not missing, f"modules missing from README.md's code layout; run `python -m benchmarks.pages`: {missing}"


@pytest.fixture
def g_row_records(tmp_path, monkeypatch):
    """A results tree with the CPU regime's records and D.A.'s seed-0 run copied in as the fair and capacity G-rows."""
    (tmp_path / pages.REGIME).symlink_to(pages.RESULTS / pages.REGIME)
    for variant in ("flatten", "capacity"):
        run = tmp_path / pages.G_ROWS[(variant, 0)] / "grn_seed0"
        run.mkdir(parents=True)
        for name in ("metrics.json", "config.json"):
            shutil.copyfile(pages.RESULTS / pages.REGIME / "da_seed0" / name, run / name)
    monkeypatch.setattr(pages, "RESULTS", tmp_path)
    for cached in (pages._json, pages.computed_pair):
        cached.cache_clear()
    yield tmp_path
    for cached in (pages._json, pages.computed_pair):
        cached.cache_clear()


def test_g_rows_table_pairs_each_g_row_with_da_of_its_seed(g_row_records):
    """A G-row identical to D.A. is 0 points from it, with no discordant images; D.A.+KL − GRN is D.A.+KL − D.A."""
    text = pages.g_rows_table()
    assert pages.G_LABELS["flatten"] in text and pages.G_LABELS["capacity"] in text
    assert "GRN (flatten) − D.A., seed 0: +0.0 [+0.0, +0.0], p = 1 (0 / 0)" in text
    da_kl_da = pages.diff(pages.computed_pair((pages.REGIME, "da_kl_seed0"), (pages.REGIME, "da_seed0")))
    assert f"D.A.+KL − GRN (capacity), seed 0: {da_kl_da}" in text
    assert "capacity − flatten, seed 0: +0.0" in text
    assert "- capacity, seed 0: D.A. ≈ GRN < D.A.+KL\n" in text
    assert "GRN above D.A." not in pages.g_row_finding()
    assert "not separated from D.A." in pages.g_row_finding()


def test_readme_takes_the_fair_g_row_once_it_has_run(g_row_records):
    assert pages.readme_runs("grn") == [(*pages.README_GRN, 0)]
    text = pages.readme_results_table()
    assert pages.README_GRN_LABEL in text
    assert "G-ResNet-9 p4m − D.A. (seed 0): +0.0 [+0.0, +0.0]" in text
