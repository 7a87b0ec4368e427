"""Catalogue-size scaling (issue 27): what a file costs as SciCat's catalogue grows.

SciCat has no index behind the ingestor's metadata search (``scientificMetadata.job_id.value``):
MongoDB scans the datasets collection, so with the search on, every file costs time in proportion
to the catalogue. The stand-in's search scans too (``testing.scicat``: every stored dataset
examined, counted as ``examined``), while a look-up or create by pid stays a dict operation, as
MongoDB's ``_id`` index keeps it. Each run starts a stand-in preloaded with 1,000, 10,000 or
100,000 datasets (``/_standin/preload``), the real daemon (``python -m scicat_ingestor run``) and
the Tansu broker, announces a batch of new files at once, then announces some of them again
(redelivered). For three configurations:

* ``search``: the pid is known (from the file) and the metadata search runs as well (the default,
  ``ingestion.check_if_dataset_exists_by_metadata_when_pid_known: true``);
* ``no_search``: the pid is known and the search is skipped (that key ``false``): a redelivered
  file meets 409 on its POST;
* ``scicat_pid``: SciCat assigns the pid (``dataset.allow_dataset_pid: false``): the search is
  the only way to see a redelivered file.

Figures per configuration and size: files/s (first publish → last origdatablock), the stand-in's
CPU per file (psutil), the p99 of the daemon's per-file ingest time (its log line; all files
announced at once, so it includes waiting for a busy stand-in), SciCat requests per new and per
redelivered file (the stand-in's counters), and lost or duplicated files (must be 0); per
configuration the ratio of files/s at the largest size to the smallest.

``python -m bench --only catalogue`` or ``python -m bench.catalogue [--sizes N ...] [--files N]
[--redelivered N] [--configurations NAME ...] [--runs R] [--quick]``; results go to
``bench/results/<date>-catalogue.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench import report
from bench.output import RESULTS_DIR, header, log, save, show_and_clean_up
from bench.report import Row, ScenarioResult, Spread, Target
from bench.scenarios import Log, percentiles, requests_per_file, warm_up
from bench.stack import (
    BenchError,
    DaemonProcess,
    DaemonSettings,
    PoolFile,
    Publisher,
    Sampler,
    Stack,
    StandInProcess,
    created_at,
    daemon_config,
    foreign_cpu_share,
)

SIZES = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class Configuration:
    """One way to configure the exists-check, as daemon config overrides."""

    name: str
    label: str
    ingestion: dict[str, Any]
    dataset: dict[str, Any] = field(default_factory=dict)
    searches: bool = True  # one scan of the catalogue per file
    new_target: float = 3  # SciCat requests per new file (the "done when")


CONFIGURATIONS = (
    Configuration(
        "search",
        "pid known, search on",
        {
            "check_if_dataset_exists_by_metadata": True,
            "check_if_dataset_exists_by_metadata_when_pid_known": True,
        },
    ),
    Configuration(
        "no_search",
        "pid known, search skipped",
        {
            "check_if_dataset_exists_by_metadata": True,
            "check_if_dataset_exists_by_metadata_when_pid_known": False,
        },
        searches=False,
        new_target=2,
    ),
    Configuration(
        "scicat_pid",
        "SciCat-assigned pid, search on",
        {"check_if_dataset_exists_by_metadata": True},
        dataset={"allow_dataset_pid": False},
    ),
)
BY_NAME = {c.name: c for c in CONFIGURATIONS}
TARGET_REDELIVERED = Target("<=", 2)
TARGET_LOST = Target("<=", 0)
TARGET_NO_SEARCH_RATIO = Target(">=", 0.9)


@dataclass(frozen=True)
class CataloguePlan:
    """Sizes chosen so that the scenario takes about 5 min on 2 quiet cores: with a search per
    file the stand-in spends ~0.3 s of CPU per file at 100,000 datasets (a Python scan), so those
    configurations get fewer files than the one that skips the search."""

    sizes: tuple[int, ...] = SIZES
    configurations: tuple[str, ...] = tuple(BY_NAME)
    files_searching: int = 100
    files_skipping: int = 500
    redelivered: int = 30
    runs: int = 1
    workers: int = 10

    @classmethod
    def quick_plan(cls) -> CataloguePlan:
        return cls(sizes=(1_000, 10_000), files_searching=20, files_skipping=40, redelivered=10)

    def files_for(self, configuration: Configuration) -> int:
        return self.files_searching if configuration.searches else self.files_skipping

    @property
    def pool_size(self) -> int:
        return max(self.files_searching, self.files_skipping)

    def described(self) -> str:
        return (
            f"catalogue sizes {', '.join(f'{s:,}' for s in self.sizes)}; per run "
            f"{self.files_searching} new files with the search on, {self.files_skipping} with "
            f"it skipped, {self.redelivered} of them redelivered; {self.runs} run(s) each; "
            f"{self.workers} workers"
        )


# ------------------------------------------------------------------------------------------------
# One run: a preloaded stand-in, one daemon, new files, then redelivered ones
# ------------------------------------------------------------------------------------------------


@dataclass
class CatalogueRun:
    """What one run measured (one configuration, one catalogue size)."""

    configuration: str
    size: int
    files: int
    redelivered: int
    seconds: float
    files_per_s: float
    standin_cpu_ms_per_file: float
    daemon_cpu_ms_per_file: float
    ingest_ms: dict[str, float]
    redelivered_ingest_ms: dict[str, float]
    requests_per_new_file: dict[str, float]
    requests_per_redelivered_file: dict[str, float]
    examined_per_new_file: float
    examined_per_redelivered_file: float
    daemon_requests_per_new_file: float | None
    lost: int
    duplicated: int
    foreign_cpu: float

    @property
    def new_requests(self) -> float:
        return round(sum(self.requests_per_new_file.values()), 3)

    @property
    def redelivered_requests(self) -> float:
        return round(sum(self.requests_per_redelivered_file.values()), 3)


def _config(
    stack: Stack, name: str, topic: str, standin: StandInProcess, c: Configuration, *, workers: int
) -> dict[str, Any]:
    """The bench's production-like daemon config with this configuration's exists-check."""
    config = daemon_config(
        stack.workspace,
        name,
        bootstrap=stack.broker.bootstrap,
        topic=topic,
        group_id=stack.unique("group"),
        standin=standin,
        data_dir=stack.data_dir,
        settings=DaemonSettings(workers=workers),
    )
    config["ingestion"].update(c.ingestion)
    config["dataset"].update(c.dataset)
    return config


def _preload(standin: StandInProcess, count: int) -> None:
    answer = requests.post(f"{standin.control_url}/preload", json={"count": count}, timeout=300)
    if not answer.ok:
        raise BenchError(f"preloading {count} datasets failed: {answer.status_code} {answer.text}")


_METRIC_LINE = re.compile(r"^(\w+)(\{[^}]*\})? ([0-9.eE+-]+)$", re.MULTILINE)


def _metric(proc: DaemonProcess, name: str, labels: str = "") -> float | None:
    """Sum of the daemon's ``/metrics`` samples named ``name`` whose labels contain ``labels``
    (None when the daemon has no such metric)."""
    text = requests.get(f"http://127.0.0.1:{proc.health_port}/metrics", timeout=5).text
    values = [
        float(value)
        for metric, found, value in _METRIC_LINE.findall(text)
        if metric == name and labels in (found or "")
    ]
    return sum(values) if values else None


def _ingest_ms(proc: DaemonProcess, outcome: str, files: Sequence[PoolFile]) -> dict[str, float]:
    """Percentiles of the daemon's own time per file (its log line) for ``files`` ending in
    ``outcome``; empty if its log has none."""
    wanted = {str(f.path) for f in files}
    times = [
        line.seconds * 1000
        for line in proc.finished_files()
        if line.outcome == outcome and line.file in wanted
    ]
    return percentiles(times) if times else {}


def _wait_existed(proc: DaemonProcess, wanted: float, timeout: float) -> None:
    """Until the daemon counts ``wanted`` files as existed (a redelivery has no origdatablock
    to wait for)."""
    deadline = time.monotonic() + timeout
    while (_metric(proc, "scicat_ingestor_files_total", 'outcome="existed"') or 0) < wanted:
        proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"redelivered files not all seen as existing after {timeout:.0f} s")
        time.sleep(0.1)


@dataclass
class _Marks:
    """Stand-in and daemon readings at one moment of a run."""

    stats: dict[str, Any]
    cpu: dict[str, float]
    daemon_requests: float | None
    wall: float = field(default_factory=time.monotonic)


def _marks(standin: StandInProcess, sampler: Sampler, proc: DaemonProcess) -> _Marks:
    requests_sent = _metric(proc, "scicat_ingestor_scicat_requests_total")
    return _Marks(standin.stats(), sampler.cpu(), requests_sent)


@contextmanager
def _stack_run(
    stack: Stack, configuration: Configuration, size: int, workers: int
) -> Iterator[tuple[StandInProcess, DaemonProcess, Publisher, Sampler]]:
    """A preloaded stand-in and a warmed-up daemon for one run; both stopped afterwards."""
    standin = stack.standin("catalogue")
    try:
        _preload(standin, size)
        topic = stack.topic("catalogue")
        name = stack.unique(f"daemon-{configuration.name}")
        config = _config(stack, name, topic, standin, configuration, workers=workers)
        proc = DaemonProcess(stack.workspace, name, config)
        publisher = Publisher(stack.broker.bootstrap, topic)
        sampler = Sampler()
        sampler.watch("standin", standin.pid)
        sampler.watch("broker", stack.broker_pid)
        proc.start()
        try:
            sampler.watch(proc.name, proc.pid)
            warm_up(stack, publisher, standin, [proc])
            yield standin, proc, publisher, sampler
        finally:
            code = proc.stop()
        if code not in (0, None):
            raise BenchError(f"daemon {proc.name} exited with {code}; see {proc.output_file}")
    finally:
        standin.stop()


def catalogue_run(
    stack: Stack, configuration: Configuration, size: int, plan: CataloguePlan
) -> CatalogueRun:
    """New files announced at once into a catalogue of ``size`` datasets, then redelivered."""
    files = stack.pool[: plan.files_for(configuration)]
    again = files[: plan.redelivered]
    warm = len(stack.warmup_files)
    with _stack_run(stack, configuration, size, plan.workers) as (standin, proc, pub, sampler):
        start = _marks(standin, sampler, proc)
        published = time.time()
        pub.all_at_once(files)
        standin.wait_for(warm + len(files), 120 + 2 * len(files), alive=proc.check_alive)
        new = _marks(standin, sampler, proc)
        existed = _metric(proc, "scicat_ingestor_files_total", 'outcome="existed"') or 0
        pub.all_at_once(again)
        _wait_existed(proc, existed + len(again), 120 + 2 * len(again))
        end = _marks(standin, sampler, proc)
        blocks = standin.origdatablocks()  # after the counts: this request is not the daemon's
        ingest = {"new": _ingest_ms(proc, "created", files)}
        ingest["redelivered"] = _ingest_ms(proc, "existed", again)
    return _result(configuration, size, files, again, (published, start, new, end), blocks, ingest)


def _result(  # noqa: PLR0917 - private, called once
    configuration: Configuration,
    size: int,
    files: Sequence[PoolFile],
    again: Sequence[PoolFile],
    marks: tuple[float, _Marks, _Marks, _Marks],
    blocks: list[dict[str, Any]],
    ingest: dict[str, dict[str, float]],
) -> CatalogueRun:
    published, start, new, end = marks
    lost, duplicated = _losses(configuration, size, files, blocks, (start, end))
    stamps = [created_at(b) for b in blocks[int(start.stats["origdatablocks"]) :]]
    seconds = max(max(stamps) - published, 1e-3)
    count = len(files)

    used = {k: v - start.cpu.get(k, 0.0) for k, v in new.cpu.items()}
    daemon = next(k for k in used if k.startswith("daemon-"))

    def cpu_ms(name: str) -> float:
        return round(used.get(name, 0.0) * 1000 / count, 2)

    daemon_requests = None
    if new.daemon_requests is not None and start.daemon_requests is not None:
        daemon_requests = round((new.daemon_requests - start.daemon_requests) / count, 3)
    return CatalogueRun(
        configuration=configuration.name,
        size=size,
        files=count,
        redelivered=len(again),
        seconds=round(seconds, 3),
        files_per_s=round(count / seconds, 2),
        standin_cpu_ms_per_file=cpu_ms("standin"),
        daemon_cpu_ms_per_file=cpu_ms(daemon),
        ingest_ms=ingest["new"],
        redelivered_ingest_ms=ingest["redelivered"],
        requests_per_new_file=requests_per_file(
            start.stats["requests"], new.stats["requests"], count
        ),
        requests_per_redelivered_file=requests_per_file(
            new.stats["requests"], end.stats["requests"], len(again)
        ),
        examined_per_new_file=round((new.stats["examined"] - start.stats["examined"]) / count),
        examined_per_redelivered_file=round(
            (end.stats["examined"] - new.stats["examined"]) / len(again)
        ),
        daemon_requests_per_new_file=daemon_requests,
        lost=lost,
        duplicated=duplicated,
        foreign_cpu=round(foreign_cpu_share(used, new.wall - start.wall), 3),
    )


def _losses(
    configuration: Configuration,
    size: int,
    files: Sequence[PoolFile],
    blocks: list[dict[str, Any]],
    marks: tuple[_Marks, _Marks],
) -> tuple[int, int]:
    """Files without their dataset and block (lost), and datasets or blocks beyond one per file
    (duplicated), at the end of the run (after the redeliveries)."""
    start, end = marks
    if int(start.stats["datasets"]) < size:
        raise BenchError(f"the stand-in holds {start.stats['datasets']} datasets, not {size}+")
    measured = blocks[int(start.stats["origdatablocks"]) :]  # creation order: warm-up's first
    datasets = {b["datasetId"] for b in measured}
    if configuration.dataset.get("allow_dataset_pid", True):
        lost = len({f.pid for f in files} - datasets)
    else:  # SciCat assigned the pids: only their number can tell
        lost = max(0, len(files) - len(datasets))
    created = int(end.stats["datasets"]) - int(start.stats["datasets"])
    return lost, (len(measured) - len(datasets)) + max(0, created - len(datasets))


# ------------------------------------------------------------------------------------------------
# The scenario
# ------------------------------------------------------------------------------------------------


def catalogue(stack: Stack, plan: CataloguePlan, log: Log) -> ScenarioResult:
    """Every configuration at every size, ``plan.runs`` times (sizes in turn within a run)."""
    if len(stack.pool) < plan.pool_size:
        raise BenchError(f"the catalogue scenario needs {plan.pool_size} pool files")
    log(f"  {plan.described()}")
    runs: list[CatalogueRun] = []
    for name in plan.configurations:
        configuration = BY_NAME[name]
        for _ in range(plan.runs):
            for size in plan.sizes:
                run = catalogue_run(stack, configuration, size, plan)
                runs.append(run)
                log(_run_line(configuration, run))
    return _scenario(plan, runs)


def _run_line(configuration: Configuration, run: CatalogueRun) -> str:
    p99 = run.ingest_ms.get("p99")
    return (
        f"  {configuration.label}, {run.size:>7,} datasets: {run.files_per_s:6.1f} files/s, "
        f"stand-in {run.standin_cpu_ms_per_file:7.1f} ms CPU/file, "
        f"ingest p99 {'-' if p99 is None else f'{p99:.0f}'} ms, "
        f"{run.examined_per_new_file:,.0f} datasets examined per new file, "
        f"requests {run.new_requests:g} per new / {run.redelivered_requests:g} per redelivered "
        f"file, lost {run.lost}, duplicated {run.duplicated}"
    )


def _scenario(plan: CataloguePlan, runs: list[CatalogueRun]) -> ScenarioResult:
    rows: list[Row] = []
    for name in plan.configurations:
        configuration = BY_NAME[name]
        mine = [r for r in runs if r.configuration == name]
        rows += _configuration_rows(configuration, plan, mine)
    return ScenarioResult(
        "catalogue",
        dataclasses.asdict(plan),
        rows=rows,
        runs=[{**dataclasses.asdict(r), "new_requests": r.new_requests} for r in runs],
        notes=[
            "Catalogue: each run preloads the stand-in with N datasets (no origdatablocks), then "
            "announces the new files at once and redelivers the first of them. The stand-in's "
            "search examines every dataset (a MongoDB collection scan: SciCat has no index on "
            "scientificMetadata), ~3 µs per dataset in Python, less than MongoDB's (issue 27 "
            "measured 17 ms at 1,000 datasets and 43-89 ms at 5,000 on backend v5); look-ups "
            "and creates by pid stay index-fast, and the origdatablocks (indexed by datasetId in "
            "SciCat) hold only the run's own files. The daemon talks API v3 to the stand-in, as "
            "every bench daemon. 'ingest p99' is the daemon's own per-file time "
            "(its log line) with every file queued at once, so it includes waiting for a busy "
            "stand-in. Requests per file exclude the daemon's /health probes. "
            f"Sizes: {plan.described()} (the default plan, 1,000-100,000 datasets with 100 resp. "
            "500 files per run, takes about 5 min on 2 quiet cores).",
        ],
    )


def _configuration_rows(
    configuration: Configuration, plan: CataloguePlan, runs: list[CatalogueRun]
) -> list[Row]:
    title = f"Catalogue: {configuration.label}"
    rows: list[Row] = []
    for size in plan.sizes:
        at = [r for r in runs if r.size == size]
        files = at[0].files
        rows += [
            Row(
                title,
                f"{size:,} datasets: files/s ({files} files)",
                "files/s",
                Spread.of([r.files_per_s for r in at]),
            ),
            Row(
                title,
                f"{size:,} datasets: stand-in CPU per file",
                "ms",
                Spread.of([r.standin_cpu_ms_per_file for r in at]),
            ),
        ]
        p99 = [r.ingest_ms["p99"] for r in at if "p99" in r.ingest_ms]
        if p99:
            rows.append(Row(title, f"{size:,} datasets: ingest p99", "ms", Spread.of(p99)))
    smallest, largest = min(plan.sizes), max(plan.sizes)
    if smallest != largest:
        pairs = zip(
            [r for r in runs if r.size == largest],
            [r for r in runs if r.size == smallest],
            strict=True,
        )
        rows.append(
            Row(
                title,
                f"files/s at {largest:,} / at {smallest:,} datasets",
                "ratio",
                Spread.of([big.files_per_s / small.files_per_s for big, small in pairs]),
                None if configuration.searches else TARGET_NO_SEARCH_RATIO,
            )
        )
    rows += [
        Row(
            title,
            "SciCat requests per new file",
            "requests",
            Spread.of([r.new_requests for r in runs]),
            Target("<=", configuration.new_target),
        ),
        Row(
            title,
            "SciCat requests per redelivered file",
            "requests",
            Spread.of([r.redelivered_requests for r in runs]),
            TARGET_REDELIVERED,
        ),
        Row(
            title,
            "lost + duplicated files (all sizes)",
            "files",
            Spread.of([r.lost + r.duplicated for r in runs]),
            TARGET_LOST,
        ),
    ]
    return rows


# ------------------------------------------------------------------------------------------------
# python -m bench.catalogue
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    plan = CataloguePlan()
    parser = argparse.ArgumentParser(
        prog="python -m bench.catalogue",
        description="Catalogue-size scaling: files/s, stand-in CPU and SciCat requests per file "
        "with 1,000-100,000 datasets in SciCat, for three exists-check configurations.",
    )
    add_arguments(parser, prefix="--")
    parser.add_argument("--quick", action="store_true", help="smoke run (sizes 1,000, 10,000)")
    parser.add_argument("--runs", type=int, help=f"runs per figure ({plan.runs})")
    parser.add_argument("--workers", type=int, help=f"daemon worker threads ({plan.workers})")
    parser.add_argument("--out", type=Path, help="results directory (default: bench/results)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "--catalogue-") -> None:
    """The catalogue's own options: ``--catalogue-sizes`` etc. on ``python -m bench``, without
    the prefix (``--sizes``) on ``python -m bench.catalogue``."""
    plan = CataloguePlan()
    parser.add_argument(
        f"{prefix}sizes",
        dest="catalogue_sizes",
        type=int,
        nargs="+",
        metavar="N",
        help=f"datasets preloaded per run ({' '.join(map(str, plan.sizes))})",
    )
    parser.add_argument(
        f"{prefix}files",
        dest="catalogue_files",
        type=int,
        metavar="N",
        help=f"new files per run, every configuration (default {plan.files_searching} with the "
        f"search on, {plan.files_skipping} with it skipped)",
    )
    parser.add_argument(
        f"{prefix}configurations",
        dest="catalogue_configurations",
        nargs="+",
        choices=tuple(BY_NAME),
        metavar="NAME",
        help=f"configurations to run ({' '.join(BY_NAME)})",
    )
    parser.add_argument(
        f"{prefix}redelivered",
        dest="catalogue_redelivered",
        type=int,
        metavar="N",
        help=f"files announced again per run ({plan.redelivered})",
    )


def build_plan(args: argparse.Namespace, quick: bool, runs: int | None) -> CataloguePlan:
    plan = CataloguePlan.quick_plan() if quick else CataloguePlan()
    changes: dict[str, Any] = {
        "sizes": tuple(args.catalogue_sizes) if args.catalogue_sizes else None,
        "configurations": (
            tuple(args.catalogue_configurations) if args.catalogue_configurations else None
        ),
        "files_searching": args.catalogue_files,
        "files_skipping": args.catalogue_files,
        "redelivered": args.catalogue_redelivered,
        "runs": runs,
        "workers": getattr(args, "workers", None),
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})
    if not 1 <= plan.redelivered <= min(plan.files_searching, plan.files_skipping):
        raise SystemExit("catalogue: redelivered files must be 1 to the new files per run")
    if min(plan.sizes) < 0:
        raise SystemExit("catalogue: a catalogue size cannot be negative")
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = build_plan(args, args.quick, args.runs)
    workspace = Path(tempfile.mkdtemp(prefix="scicat-bench-catalogue-"))
    results = header({"catalogue": dataclasses.asdict(plan)}, quick=args.quick)
    started = time.monotonic()
    try:
        log(f"writing {plan.pool_size} NeXus files and starting the broker ...")
        with Stack(workspace, plan.pool_size) as stack:
            results.scenarios.append(catalogue(stack, plan, log))
    except BenchError as exc:
        print(f"error: {exc}\n(work directory kept: {workspace})", file=sys.stderr)
        return 1
    results.machine["cpu_speed_ms_end"] = report.cpu_speed_ms()
    results.duration_s = round(time.monotonic() - started, 1)
    stem = save(results, args.out or RESULTS_DIR, args.quick, "catalogue")
    show_and_clean_up(results, stem, workspace, keep=args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
