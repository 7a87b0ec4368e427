"""CPU per file by part of the pipeline: one thread, in process, against the stand-in.

``python -m bench.phases [--files N] [--profile production|ess]`` runs the real ``Pipeline`` (the
daemon's configuration, logging set up as ``run`` does) over copies of the sample files, one file
after the other, and charges the thread's CPU time (``time.thread_time``, so other processes on a
busy machine do not count) to the part running at that moment. Parts nest (an ``SC`` lookup runs
inside the schema evaluation): time is charged to the innermost part only. The timers wrap
functions of this process only; nothing is instrumented in the package. What the daemon spends
beyond this single-threaded total (Kafka poll loop, thread hand-over, GIL contention) is its CPU
per file in the throughput scenario minus this total.

Prints one JSON object (ms of CPU per file by part) on stdout's last line.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scicat_ingestor import scicat as scicat_module
from scicat_ingestor.config.model import IngestorConfig, build
from scicat_ingestor.ingest import pipeline as pipeline_module
from scicat_ingestor.ingest.pipeline import Job, Pipeline
from scicat_ingestor.ops.logs import reset_logging, setup_logging
from scicat_ingestor.schema.loader import load_schemas

PARTS = ("nexus_schema", "http_client", "files", "logging", "pipeline_other")


class PhaseClock:
    """Thread CPU charged to the innermost running part (single-threaded use only)."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(PARTS, 0.0)
        self._stack: list[str] = []
        self._mark = time.thread_time()

    def _charge(self) -> None:
        now = time.thread_time()
        if self._stack:
            self.totals[self._stack[-1]] += now - self._mark
        self._mark = now

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._charge()
        self._stack.append(name)
        try:
            yield
        finally:
            self._charge()
            self._stack.pop()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return fn(*args, **kwargs)

        return timed

    def wrap_cm(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A context-manager factory whose enter and exit are charged to ``name``."""

        @contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with self.part(name):
                cm = fn(*args, **kwargs)
                value = cm.__enter__()
            try:
                yield value
            except BaseException:
                with self.part(name):
                    if not cm.__exit__(*sys.exc_info()):
                        raise
            else:
                with self.part(name):
                    cm.__exit__(None, None, None)

        return timed


def instrument(clock: PhaseClock) -> None:
    """Swap the pipeline's collaborators for timed ones (in this process only)."""
    p = pipeline_module
    p.open_nexus = clock.wrap_cm("nexus_schema", p.open_nexus)  # type: ignore[assignment]
    for name in ("evaluate_variables", "build_dataset"):
        setattr(p, name, clock.wrap("nexus_schema", getattr(p, name)))
    for name in (
        "checksum",
        "stat_entry",
        "write_hash_file",
        "write_message_file",
        "resolve_in_roots",
        "require_regular_file",
        "relative_to_source_folder",
        "_pid_seed",
    ):
        setattr(p, name, clock.wrap("files", getattr(p, name)))
    client_cls = scicat_module.SciCatClient
    client_cls._call = clock.wrap("http_client", client_cls._call)  # type: ignore[method-assign]
    logging.Logger._log = clock.wrap("logging", logging.Logger._log)  # type: ignore[method-assign]


def measure(files: int, profile: str, workspace: Path) -> dict[str, Any]:
    from bench.stack import (
        DaemonSettings,
        StandInProcess,
        daemon_config,
        profile_overrides,
        write_pool,
    )

    standin = StandInProcess(workspace / "standin.log").start()
    try:
        pool = write_pool(workspace / "data", files + 4, "phase")
        data = daemon_config(
            workspace,
            "phases",
            bootstrap="127.0.0.1:9",
            topic="phases",
            group_id="phases",
            standin=standin,
            data_dir=workspace / "data",
            settings=DaemonSettings(),
        )
        profile_overrides(data, profile)
        (workspace / "logs").mkdir(exist_ok=True)
        config = build(IngestorConfig, data, "bench.phases")
        setup_logging(config.logging, [])
        schemas = load_schemas(config.ingestion.schemas_directory)
        client = scicat_module.SciCatClient(config.scicat)
        pipe = Pipeline(config, schemas, client)
        for file in pool[:4]:  # warm-up: imports, connections, caches
            pipe.ingest(Job(str(file.path), file.uuid))
        clock = PhaseClock()
        instrument(clock)
        started = time.thread_time()
        for file in pool[4:]:
            with clock.part("pipeline_other"):
                outcome = pipe.ingest(Job(str(file.path), file.uuid))
            if type(outcome).__name__ != "Created":
                raise RuntimeError(f"{file.path}: {outcome}")
        total = time.thread_time() - started
        client.close()
    finally:
        reset_logging()
        standin.stop()
    per_file = {k: round(v / files * 1000, 3) for k, v in clock.totals.items()}
    per_file["total"] = round(total / files * 1000, 3)
    return {"files": files, "profile": profile, "ms_cpu_per_file": per_file}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--profile", choices=("production", "ess"), default="production")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        result = measure(args.files, args.profile, Path(tmp))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


LABELS = {
    "nexus_schema": "NeXus reads + schema",
    "http_client": "HTTP client (requests)",
    "files": "files, checksums, side files",
    "logging": "logging",
    "pipeline_other": "rest of the pipeline (context, metrics)",
    "total": "pipeline total, one thread",
}


def phases(
    plan: Any, log: Callable[[str], None], daemon_cpu: dict[str, float] | None = None
) -> Any:
    """Scenario: this module's breakdown per profile, ``plan.runs`` runs each, in subprocesses.

    ``daemon_cpu`` (profile → the throughput scenario's median daemon CPU-s per file) adds the
    row "Kafka + daemon loop + threads": what the daemon spends beyond the one-thread total.
    """
    import subprocess

    from bench.report import Row, ScenarioResult, Spread

    files = 50 if plan.quick else 300
    rows: list[Row] = []
    raw: list[dict[str, Any]] = []
    for profile in ("production", "ess"):
        results = []
        for _ in range(plan.runs):
            done = subprocess.run(
                [sys.executable, "-m", "bench.phases", "--files", str(files), "--profile", profile],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1])["ms_cpu_per_file"])
        raw += [{"profile": profile, **r} for r in results]
        name = f"CPU per file by part, {profile} profile ({files} files, in process)"
        for part, label in LABELS.items():
            rows.append(Row(name, label, "ms CPU", Spread.of([r[part] for r in results])))
        if daemon_cpu and profile in daemon_cpu:
            total = Spread.of([r["total"] for r in results]).median
            rest = daemon_cpu[profile] * 1000 - total
            rows.append(
                Row(
                    name,
                    "Kafka + daemon loop + threads (daemon - total)",
                    "ms CPU",
                    Spread.of([rest]),
                )
            )
        log(f"  {profile}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[-1].items()))
    return ScenarioResult(
        "phases",
        {"files": files},
        rows=rows,
        runs=raw,
        notes=[
            "Phases: python -m bench.phases — the real Pipeline, one thread, in process against "
            "the stand-in (its own process); time.thread_time charged to the innermost running "
            "part, so other processes' load does not count. The last row is the throughput "
            "scenario's median daemon CPU per file minus this total: the Kafka poll loop, "
            "librdkafka's threads, hand-over between threads and GIL contention."
        ],
    )
