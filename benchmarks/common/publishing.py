"""Keeping benchmark results: git commits of each finished run's small records (`--commit`), copies in docs/results.

A commit takes the tables and each run's records, never models, backups or logs, so that finished rows are kept
whenever a sitting ends.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common.protocols import REPO_ROOT

PUBLISH_DIR = REPO_ROOT / "docs" / "results"
MODELS_DIR = REPO_ROOT / "models"
# Each run's small records, committed by --commit (models, backups and logs stay out of git); flags.cfg is the
# flagfile that retrains the run with trainers.fit.
# With a committed backup, epoch_logs.json and precision.json let an unfinished run resume in another checkout.
# benchmarks.training_regime's record of a run that did not grade its training images itself.
TRAINING_REGIME_RECORD = "training_regime.json"
COMMITTED_RUN_FILES = (
    "flags.cfg",
    "metrics.json",
    "config.json",
    "epoch_seconds.json",
    "epoch_logs.json",
    "precision.json",
    "landscape.json",
    "measured.json",
    TRAINING_REGIME_RECORD,
)


def commit_rule(commit: bool, out: str | None) -> tuple[str, bool, str]:
    """The `invariance_tf.options.check` rule of a `--commit` flag: `--out` inside this checkout, to be committed."""
    inside = out is not None and Path(out).resolve().is_relative_to(REPO_ROOT)
    return "commit", not commit or inside, f"needs --out inside the checkout {REPO_ROOT}; got --out={out}"


def publish_results(out: Path, dataset: str, scale: str) -> None:
    """Copies results.json, table.md and per_angle.png to docs/results/<dataset>_<scale>*."""
    PUBLISH_DIR.mkdir(parents=True, exist_ok=True)
    for name, suffix in (("results.json", ".json"), ("table.md", "_table.md"), ("per_angle.png", "_per_angle.png")):
        if (out / name).is_file():
            shutil.copyfile(out / name, PUBLISH_DIR / f"{dataset}_{scale}{suffix}")


def keep_model(run_dir: Path, out: Path) -> Path:
    """Saves a finished run's classifier (no optimiser state) as models/<out's name>/<run's name>.keras; its path.

    Anyone can re-grade it with `python -m trainers.evaluate --model <path>`.
    """
    from invariance_tf import model_files
    from invariance_tf.model import classifier_network

    kept = MODELS_DIR / out.name / f"{run_dir.name}.keras"
    kept.parent.mkdir(parents=True, exist_ok=True)
    classifier_network(model_files.load_keras(run_dir / "model.keras")).save(kept)
    return kept


def render_pages() -> list[str]:
    """Re-renders the documentation's generated spans from the records (`python -m benchmarks.pages`); its pages.

    A finished run changes records the pages are rendered from, so its commit carries the re-rendered pages
    (`tests/test_pages.py` fails on a page older than its records). None outside this project's checkout.
    """
    if not (REPO_ROOT / "benchmarks" / "pages.py").is_file():
        return []
    subprocess.run([sys.executable, "-m", "benchmarks.pages"], cwd=REPO_ROOT, capture_output=True)
    from benchmarks import pages

    return [str(REPO_ROOT / page) for page in pages.PAGES]


def commit_results(
    out: Path,
    message: str,
    tables: Sequence[str] = ("results.json", "table.md", "per_angle.png"),
    extra: Sequence[Path] = (),
) -> None:
    """Commits `out`'s `tables`, each run's small records (`COMMITTED_RUN_FILES`) and the `extra` files.

    It also commits the removal of tracked files gone from `out` (a backup committed to carry an unfinished run
    between sittings, removed when the run finished) and the documentation re-rendered from the new records
    (`render_pages`); nothing else of the checkout. A failed commit is reported,
    not raised, so the protocol goes on (the next commit includes what this one missed).
    """
    names = [*tables, *(f"*_seed*/{name}" for name in COMMITTED_RUN_FILES)]
    paths = sorted(str(path) for name in names for path in out.glob(name)) + [str(path) for path in extra]
    paths += render_pages()
    git = ["git", "-C", str(REPO_ROOT)]
    tracked = subprocess.run(
        [*git, "ls-files", "--full-name", "--", str(out.resolve())], capture_output=True, text=True
    ).stdout.split()
    paths += [str(REPO_ROOT / path) for path in tracked if not (REPO_ROOT / path).exists()]
    error = ""
    for attempt in range(5):
        added = subprocess.run([*git, "add", "--", *paths], capture_output=True, text=True)
        if added.returncode == 0:
            if subprocess.run([*git, "diff", "--cached", "--quiet", "--", *paths]).returncode == 0:
                return
            done = subprocess.run(
                [*git, "commit", "--quiet", "-m", f"Results: {message}", "--", *paths], capture_output=True, text=True
            )
            if done.returncode == 0:
                return
            error = done.stderr
        else:
            error = added.stderr
        time.sleep(2 + 3 * attempt)
    print(f"warning: could not commit the results of {message}: {error.strip()}", flush=True)
