"""Where ``python -m bench`` and the scenarios run on their own write, and how their results
start: the machine, how busy it was, the settings and the method notes."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from bench import report
from bench.stack import busy_elsewhere

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUSY_WARNING = 0.1  # share of the machine used by others at start above which the run is flagged


def log(text: str) -> None:
    print(text, flush=True)


def header(settings: dict[str, object], quick: bool) -> report.Results:
    """Results without figures yet: date, machine (and how busy it is), settings, method notes."""
    now = dt.datetime.now(dt.UTC)
    results = report.Results(
        date=now.strftime("%Y-%m-%d"),
        started=now.isoformat(timespec="seconds"),
        machine=report.machine_info(),
        settings=settings | {"quick": quick},
    )
    results.machine["cpu_speed_ms_start"] = report.cpu_speed_ms()
    log(f"machine: {report.machine_line(results.machine)}")
    elsewhere = busy_elsewhere()
    results.machine["busy_elsewhere_at_start"] = round(elsewhere, 3)
    if elsewhere > BUSY_WARNING:
        warning = (
            f"WARNING: other processes used {elsewhere:.0%} of the machine when the benchmark "
            "started; the figures are low and noisy (see 'machine used by other processes')."
        )
        log(warning)
        results.notes.append(warning)
    results.notes.append(
        "Every part is its own process: Tansu broker, SciCat stand-in "
        "(python -m scicat_ingestor.testing.scicat, so its CPU does not share the daemon's "
        "GIL) and the daemon (python -m scicat_ingestor run; hashing, stats, hash and message "
        "side files on; INFO logging to stdout and a file). The machine has "
        f"{results.machine['logical_cores']} cores for all of them: broker, stand-in and daemon "
        "compete for CPU, so the figures are a floor for a daemon with a host of its own."
    )
    if quick:
        results.notes.append(
            "QUICK SMOKE RUN: sizes too small and too few runs to be a measurement."
        )
    return results


def save(results: report.Results, out: Path, quick: bool, part: str = "") -> Path:
    """Write JSON, markdown and PNG; a smoke run (``-quick``) or a part of the scenarios
    (``-<part>``) gets its own name, so that neither replaces a full measurement."""
    out.mkdir(parents=True, exist_ok=True)
    name = results.date + ("-quick" if quick else "")
    if part:
        name += f"-{part}"
    stem = out / name
    report.write_json(results, stem.with_suffix(".json"))
    stem.with_suffix(".md").write_text(report.markdown(results), encoding="utf-8")
    if {s.name for s in results.scenarios} & set(report.PLOTTED):
        report.plot(results, stem.with_suffix(".png"))
    return stem


def show_and_clean_up(results: report.Results, stem: Path, workspace: Path, keep: bool) -> None:
    """Print the table and where the results went; remove the work directory unless kept."""
    print()
    print(report.markdown(results))
    print(f"results: {stem}.* ({results.duration_s:.0f} s)")
    if keep:
        print(f"work directory kept: {workspace}")
    else:
        shutil.rmtree(workspace, ignore_errors=True)
