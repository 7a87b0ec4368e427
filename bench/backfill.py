"""Backfill start-up and memory: ``ingest`` over a tree of 100,000 entries against one of 100.

Each run is ``python -m scicat_ingestor ingest`` in a pseudo-terminal (so the bar is drawn) over a
generated tree of tiny ``.hdf`` files that are not HDF5 and that no schema selects: every file goes
through discovery, the job window, the pipeline (rejected there, before h5py or SciCat), its WARNING
line above the bar, the summary and the bar. Figures: seconds from the process start to the first
bar drawn (Python start-up and imports included, so the 100-file run is the baseline), and peak RSS
of the process (``wait4``'s ``ru_maxrss``). Run alone: ``python -m bench.backfill [--entries N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.report import Row, ScenarioResult, Spread, Target
from scicat_ingestor.testing.terminal import run_in_pty

ENTRIES = 100_000
BASELINE_ENTRIES = 100
PER_DIRECTORY = 1000
TARGET_BAR_SECONDS = Target("<=", 1.0)
TARGET_RSS_GROWTH_MB = Target("<=", 50)


def make_tree(root: Path, entries: int) -> Path:
    """``entries`` tiny non-HDF5 ``.hdf`` files, ``PER_DIRECTORY`` to a directory."""
    for n in range(entries):
        folder = root / f"d{n // PER_DIRECTORY:04d}"
        if n % PER_DIRECTORY == 0:
            folder.mkdir(parents=True)
        (folder / f"f{n:07d}.hdf").write_bytes(b"not HDF5")
    return root


def _config(workspace: Path) -> Path:
    schemas = workspace / "schemas"
    schemas.mkdir(exist_ok=True)
    path = workspace / "config.yml"
    settings = {
        # never contacted: every file is rejected before the first request
        "scicat": {"host": "http://127.0.0.1:9/api/v3", "token": "unused"},
        "ingestion": {"schemas_directory": str(schemas)},
        "logging": {"logging_level": "WARNING"},
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def run_once(config: Path, tree: Path, workers: int = 2) -> dict[str, Any]:
    """One ``ingest`` in a pty: seconds to the first bar, total seconds, peak RSS (MiB)."""
    argv = [sys.executable, "-m", "scicat_ingestor", "ingest", "-c", str(config)]
    started = time.monotonic()
    run = run_in_pty([*argv, "-w", str(workers), str(tree)], marker=b"\ringest")
    return {
        "entries": sum(1 for _ in tree.rglob("*.hdf")),
        "exit_code": run.exit_code,
        "first_bar_s": round(run.marker_after if run.marker_after is not None else -1.0, 3),
        "total_s": round(time.monotonic() - started, 1),
        "peak_rss_mib": round(run.peak_rss_mib, 1),
    }


def backfill(workspace: Path, log: Callable[[str], None], entries: int = ENTRIES) -> ScenarioResult:
    """The scenario: the baseline tree, then the big one; one run each."""
    config = _config(workspace)
    runs = []
    for size in (BASELINE_ENTRIES, entries):
        tree = make_tree(workspace / f"tree-{size}", size)
        result = run_once(config, tree)
        log(f"  backfill {size} entries: {result}")
        runs.append(result)
    small, big = runs
    name = f"Backfill: ingest over {entries} entries vs {BASELINE_ENTRIES} (pty, 2 workers)"

    def one(value: float) -> Spread:
        return Spread(value, value, value, 1, (value,))

    growth = round(big["peak_rss_mib"] - small["peak_rss_mib"], 1)
    return ScenarioResult(
        "backfill",
        {"entries": entries, "baseline_entries": BASELINE_ENTRIES, "workers": 2},
        rows=[
            Row(
                name,
                f"first bar, {entries} entries",
                "s",
                one(big["first_bar_s"]),
                TARGET_BAR_SECONDS,
            ),
            Row(name, f"first bar, {BASELINE_ENTRIES} entries", "s", one(small["first_bar_s"])),
            Row(name, f"peak RSS, {entries} entries", "MiB", one(big["peak_rss_mib"])),
            Row(name, f"peak RSS, {BASELINE_ENTRIES} entries", "MiB", one(small["peak_rss_mib"])),
            Row(name, "peak RSS: difference", "MiB", one(growth), TARGET_RSS_GROWTH_MB),
            Row(name, f"whole run, {entries} entries", "s", one(big["total_s"])),
        ],
        runs=runs,
        notes=[
            "Backfill: one run each; the first-bar time includes Python start-up and imports "
            "(the baseline run shows that part). Files are tiny non-HDF5 .hdf files no schema "
            "selects: each goes through discovery, the job window and the pipeline, without h5py "
            "or SciCat time."
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--entries", type=int, default=ENTRIES)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scicat-backfill-") as work:
        result = backfill(Path(work), print, args.entries)
    for row in result.rows:
        print(
            f"{row.figure}: {row.spread.median} {row.unit}"
            + (f" (target {row.target}, {'met' if row.met else 'NOT met'})" if row.target else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
