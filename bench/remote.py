"""A remote SciCat: the stand-in answers every request 20 ms or 50 ms late.

On loopback SciCat answers in about a millisecond and the daemon's CPU is the limit; a real SciCat
is a network round trip away, and each file then waits for its calls one after the other. With
``workers`` threads each waiting ``calls per file x latency`` per file, the daemon can reach at most
``workers / (calls per file x latency)`` files/s (the model) until its CPU becomes the limit
again. This scenario measures files/s against that model for 4, 10, 20 and 50 workers; the
README's sizing advice comes from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import Row, ScenarioResult, Spread
from bench.scenarios import FlowRun, Log, Plan, flow_run
from bench.stack import DaemonSettings, Stack

LATENCIES_S = (0.02, 0.05)
WORKERS = (4, 10, 20, 50)
RUN_SECONDS = 4.0  # files per run: the model's rate for this long, within the bounds below
MIN_FILES, MAX_FILES = 80, 400
# SciCat calls per new file in the production profile once the SC lookups are cached.
EXPECTED_CALLS = 4


def _files_for(workers: int, latency: float, quick: bool) -> int:
    model = workers / (EXPECTED_CALLS * latency)
    wanted = int(model * (1.0 if quick else RUN_SECONDS))
    return max(MIN_FILES // (4 if quick else 1), min(wanted, MAX_FILES))


def remote(stack: Stack, plan: Plan, log: Log) -> ScenarioResult:
    rows: list[Row] = []
    runs: list[dict[str, object]] = []
    points: list[dict[str, float]] = []
    for latency in LATENCIES_S:
        name = f"Remote SciCat, +{latency * 1000:.0f} ms per request"
        for workers in WORKERS:
            count = min(_files_for(workers, latency, plan.quick), len(stack.pool))
            settings = DaemonSettings(workers=workers, queue_size=plan.queue_size)
            flows: Sequence[FlowRun] = [
                flow_run(stack, stack.pool[:count], settings, latency=latency)
                for _ in range(plan.runs)
            ]
            calls = [sum(f.requests_per_file.values()) for f in flows]
            models = [workers / (c * latency) for c in calls]
            rate = Spread.of([f.files_per_s for f in flows])
            ratio = Spread.of([f.files_per_s / m for f, m in zip(flows, models, strict=True)])
            rows += [
                Row(name, f"{workers} workers ({count} files)", "files/s", rate),
                Row(name, f"{workers} workers / model", "ratio", ratio),
            ]
            points.append(
                {
                    "latency_ms": latency * 1000,
                    "workers": workers,
                    "files_per_s": rate.median,
                    "model": round(sorted(models)[len(models) // 2], 2),
                    "calls_per_file": sorted(calls)[len(calls) // 2],
                    "cpu_s_per_file": Spread.of([f.cpu_s_per_file for f in flows]).median,
                }
            )
            runs.extend({**f.summary(), "latency_s": latency} for f in flows)
            log(
                f"  +{latency * 1000:.0f} ms, {workers:2d} workers: {rate.median:.1f} files/s "
                f"({rate.min:.1f}-{rate.max:.1f}), model {points[-1]['model']:.1f}"
            )
    return ScenarioResult(
        "remote",
        {"latencies_s": list(LATENCIES_S), "workers": list(WORKERS)},
        rows=rows,
        runs=runs,
        series={"points": points},
        notes=[
            "Remote SciCat: the stand-in sleeps the given time before answering each request "
            "(its threads wait in parallel); model = workers / (SciCat calls per file x latency), "
            "the calls counted by the stand-in in the same run."
        ],
    )
