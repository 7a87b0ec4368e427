"""``python -m bench`` (``make bench``): run the scenarios, print the table, write the results.

Results go to ``bench/results/<date>.json``, ``.md`` and ``.png`` (``<date>-quick.*`` for a
``--quick`` smoke run, so that a smoke run never replaces a measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import catalogue, report, scenarios
from bench.output import BUSY_WARNING, RESULTS_DIR, header, log, save, show_and_clean_up
from bench.stack import BenchError, Stack, busy_elsewhere

SCENARIOS = (
    "throughput",
    "phases",
    "latency",
    "backlog",
    "workers",
    "scale_out",
    "remote",
    "hashing",
    "backfill",
    "catalogue",
    "profile",
)
DEFAULT_SCENARIOS = SCENARIOS[:-1]


def _parser() -> argparse.ArgumentParser:
    plan = scenarios.Plan()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end benchmark of scicat-ingestor with a real broker, the SciCat "
        "stand-in and the daemon as separate processes.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny sizes, one run each (results named <date>-quick)",
    )
    parser.add_argument("--files", type=int, help=f"files per throughput run ({plan.files})")
    parser.add_argument("--runs", type=int, help=f"runs per figure ({plan.runs})")
    parser.add_argument("--workers", type=int, help=f"daemon worker threads ({plan.workers})")
    parser.add_argument(
        "--queue-size", type=int, help=f"ingestion.queue_size of the daemon ({plan.queue_size})"
    )
    parser.add_argument("--backlog", type=int, help=f"messages waiting at start ({plan.backlog})")
    parser.add_argument(
        "--scaling-files", type=int, help=f"files per worker-scaling run ({plan.scaling_files})"
    )
    parser.add_argument("--hashing-mib", type=int, help=f"hashed file size ({plan.hashing_mib})")
    catalogue.add_arguments(parser)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(DEFAULT_SCENARIOS),
        metavar="SCENARIO",
        help=f"scenarios to run: {', '.join(SCENARIOS)} (default: all but profile)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to leave the machine idle",
    )
    return parser


def build_plan(args: argparse.Namespace) -> scenarios.Plan:
    plan = scenarios.Plan.quick_plan() if args.quick else scenarios.Plan()
    changes = {
        "files": args.files,
        "scaleout_files": args.files,
        "runs": args.runs,
        "workers": args.workers,
        "queue_size": args.queue_size,
        "backlog": args.backlog,
        "scaling_files": args.scaling_files,
        "hashing_mib": args.hashing_mib,
    }
    return dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})


def _header(plan: scenarios.Plan, catalogue_plan: catalogue.CataloguePlan | None) -> report.Results:
    settings: dict[str, object] = {
        k: v for k, v in dataclasses.asdict(plan).items() if k != "quick"
    }
    if catalogue_plan is not None:
        settings["catalogue"] = dataclasses.asdict(catalogue_plan)
    return header(settings, plan.quick)


def _throughput(
    stack: Stack, plan: scenarios.Plan, results: report.Results
) -> tuple[float, dict[str, float], list[scenarios.FlowRun]]:
    """Throughput and HTTP-only limit for both profiles: production files/s, CPU-s per file by
    profile, and the production runs (scale-out reuses them)."""
    log(f"throughput and HTTP-only limit: {plan.runs} x {plan.files} files")
    flow, limit, single = scenarios.throughput(stack, plan, log)
    log(f"throughput and HTTP-only limit, ESS profile: {plan.runs} x {plan.files} files")
    flow_ess, limit_ess, _ = scenarios.throughput(stack, plan, log, "ess")
    results.scenarios += [flow, limit, flow_ess, limit_ess]
    cpu = {"production": flow.rows[2].spread.median, "ess": flow_ess.rows[2].spread.median}
    return flow.rows[0].spread.median, cpu, single


def _phases_and_remote(
    stack: Stack | None,
    plan: scenarios.Plan,
    selected: Sequence[str],
    results: report.Results,
    daemon_cpu: dict[str, float],
) -> None:
    """CPU per file by part (no stack needed) and the remote-SciCat scenario."""
    if "phases" in selected:
        from bench.phases import phases

        log("CPU per file by part (one thread, in process)")
        results.scenarios.append(phases(plan, log, daemon_cpu))
    if "remote" in selected and stack is not None:
        from bench.remote import remote

        log("remote SciCat: +20 ms and +50 ms per request, 4-50 workers")
        results.scenarios.append(remote(stack, plan, log))


def _catalogue(
    stack: Stack | None, plan: catalogue.CataloguePlan, workspace: Path, results: report.Results
) -> None:
    """The catalogue-size scenario, on the bench's stack when it has the files, else (run
    alone) on one of its own with only the files it needs."""
    log(f"catalogue: {len(plan.sizes)} sizes x {len(plan.configurations)} configurations")
    if stack is not None and len(stack.pool) >= plan.pool_size:
        results.scenarios.append(catalogue.catalogue(stack, plan, log))
        return
    with Stack(workspace / "catalogue", plan.pool_size) as own:
        results.scenarios.append(catalogue.catalogue(own, plan, log))


def run(
    plan: scenarios.Plan,
    selected: Sequence[str],
    workspace: Path,
    catalogue_plan: catalogue.CataloguePlan | None = None,
) -> report.Results:
    started = time.monotonic()
    catalogue_plan = catalogue_plan or catalogue.CataloguePlan()
    results = _header(plan, catalogue_plan if "catalogue" in selected else None)
    needs_stack = set(selected) - {"hashing", "backfill", "phases", "catalogue"}
    stack = None
    try:
        if needs_stack:
            log(f"writing {plan.pool_size} NeXus files and starting the broker ...")
            stack = Stack(workspace, plan.pool_size)
        max_rate = 0.0
        daemon_cpu: dict[str, float] = {}
        single: list[scenarios.FlowRun] = []
        if "throughput" in selected and stack is not None:
            max_rate, daemon_cpu, single = _throughput(stack, plan, results)
        _phases_and_remote(stack, plan, selected, results, daemon_cpu)
        if "latency" in selected and stack is not None:
            if not max_rate:
                raise BenchError("the latency scenario needs the throughput scenario")
            log(f"latency at half of {max_rate:.0f} files/s")
            results.scenarios.append(scenarios.latency(stack, plan, max_rate, log))
        if "backlog" in selected and stack is not None:
            log(f"backlog: {plan.backlog} messages waiting at start, {plan.backlog_runs} run(s)")
            results.scenarios.append(scenarios.backlog(stack, plan, log))
        if "workers" in selected and stack is not None:
            log(f"worker scaling: {plan.scaling_workers}, {plan.scaling_files} files")
            results.scenarios.append(scenarios.workers(stack, plan, log))
        if "scale_out" in selected and stack is not None:
            log(f"scale-out: two daemons in one group, {plan.scaleout_files} files")
            reuse = single if plan.scaleout_files == plan.files else []
            results.scenarios.append(scenarios.scale_out(stack, plan, log, reuse))
        if "profile" in selected and stack is not None:
            from bench import profile

            log("profile: py-spy on the daemon during one throughput run")
            results.scenarios.append(profile.profile_run(stack, plan, log))
        if "hashing" in selected:
            log(f"hashing: {plan.hashing_mib} MiB")
            results.scenarios.append(scenarios.hashing(plan, workspace, log))
        if "backfill" in selected:
            from bench.backfill import backfill

            log("backfill: ingest over 100,000 entries against 100 (bar, peak RSS)")
            results.scenarios.append(backfill(workspace, log))
        if "catalogue" in selected:
            _catalogue(stack, catalogue_plan, workspace, results)
    finally:
        if stack is not None:
            stack.close()
    results.machine["cpu_speed_ms_end"] = report.cpu_speed_ms()
    results.duration_s = round(time.monotonic() - started, 1)
    return results


def _wait_quiet(limit: float) -> None:
    deadline = time.monotonic() + limit
    while (busy := busy_elsewhere(5.0)) > BUSY_WARNING and time.monotonic() < deadline:
        log(f"waiting: other processes use {busy:.0%} of the machine")
        time.sleep(25)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = build_plan(args)
    catalogue_plan = catalogue.build_plan(args, plan.quick, args.runs)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.wait_quiet > 0:
        _wait_quiet(args.wait_quiet)
    workspace = Path(tempfile.mkdtemp(prefix="scicat-bench-"))
    try:
        results = run(plan, args.only, workspace, catalogue_plan)
    except BenchError as exc:
        print(f"error: {exc}\n(work directory kept: {workspace})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted (work directory kept: {workspace})", file=sys.stderr)
        return 1
    selected = sorted(set(args.only))
    part = "" if set(selected) == set(DEFAULT_SCENARIOS) else "-".join(selected)
    stem = save(results, args.out, plan.quick, part)
    show_and_clean_up(results, stem, workspace, keep=args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
