"""The benchmark scenarios of issue 7, each measured through the real parts (see ``stack``).

Shared method: every run gets a fresh SciCat stand-in process (its store starts empty, so runs do
not slow each other down), a fresh topic with 4 partitions and a fresh consumer group. The daemon is
warmed up first (one message per partition ingested, all partitions assigned), then the measured
messages are published; a run ends when the stand-in holds every origdatablock. Times come from the
stand-in's ``createdAt`` of each origdatablock (millisecond UTC) against the bench's clock at
publish time (same machine, same clock).
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.report import Row, ScenarioResult, Spread, Target
from bench.stack import (
    API_VERSION,
    PARTITIONS,
    SCHEMAS_DIR,
    BenchError,
    DaemonProcess,
    DaemonSettings,
    PoolFile,
    Publisher,
    Sampler,
    Stack,
    StandInProcess,
    created_at,
    foreign_cpu_share,
    running,
    thread_switches,
)
from scicat_ingestor.config.model import IngestionOptions, SciCatOptions, Secret
from scicat_ingestor.scicat import LookupCache, SciCatClient

Log = Callable[[str], None]

# The targets on this (2-core) machine.
TARGET_FILES_PER_S = Target(">=", 100)
TARGET_RATIO = Target(">=", 0.7)
TARGET_CPU_PER_FILE = Target("<=", 0.01)
TARGET_P99_MS = Target("<=", 100)
TARGET_RSS_MB = Target("<=", 150)
TARGET_HASH_RATIO = Target(">=", 0.8)
TARGET_SCALING = Target(">=", 1.0)  # 10 workers at least as fast as 1


@dataclass(frozen=True)
class Plan:
    """Sizes of every scenario; chosen so that ``make bench`` stays under 15 min on 2 cores."""

    files: int = 2000
    runs: int = 3
    workers: int = 10
    queue_size: int = IngestionOptions().queue_size  # the production default
    latency_seconds: float = 15.0
    latency_fetch_wait_ms: int = 10
    backlog: int = 10_000
    backlog_runs: int = 1
    scaling_files: int = 600
    scaling_workers: tuple[int, ...] = (1, 2, 4, 10, 16)
    # Counts also measured with ``ingestion.worker_turns: false`` (ops/turns.py), next to turns on.
    scaling_turns_off: tuple[int, ...] = (1, 10)
    scaleout_files: int = 2000
    hashing_mib: int = 1024
    # A throughput run should take at most this long (else fewer files, see _calibrated_size).
    run_seconds: float = 30.0
    calibration_files: int = 200
    # The backlog run stops after this long even if messages are still waiting.
    backlog_seconds: float = 60.0
    quick: bool = False

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(
            files=100,
            runs=1,
            latency_seconds=3.0,
            backlog=300,
            scaling_files=60,
            scaling_workers=(1, 4),
            scaling_turns_off=(1, 4),
            scaleout_files=100,
            hashing_mib=64,
            calibration_files=0,
            backlog_seconds=30.0,
            quick=True,
        )

    @property
    def pool_size(self) -> int:
        return max(self.files, self.backlog, self.scaling_files, self.scaleout_files)


# ------------------------------------------------------------------------------------------------
# One daemon run (shared by throughput, worker scaling and scale-out)
# ------------------------------------------------------------------------------------------------


@dataclass
class FlowRun:
    """What one run of "N files announced at once" measured."""

    files: int
    daemons: int
    workers: int
    seconds: float
    files_per_s: float
    cpu_s_per_file: float
    peak_rss_mb: float
    cpu_s: dict[str, float]
    foreign_cpu: float
    switches_per_file: float
    requests_per_file: dict[str, float]
    rate: tuple[list[float], list[float]]
    rss: tuple[list[float], list[float]]
    templates: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("rate", "rss", "templates")}
        return data


def _wait_assigned(daemons: Sequence[DaemonProcess], timeout: float = 60.0) -> None:
    """Until the daemons share every partition (from their ``/ready`` ``assigned_partitions``)."""
    deadline = time.monotonic() + timeout
    assigned: list[int] = []
    while time.monotonic() < deadline:
        assigned = []
        for daemon in daemons:
            daemon.check_alive()
            try:
                body = requests.get(
                    f"http://127.0.0.1:{daemon.health_port}/ready", timeout=2
                ).json()
                assigned.append(int(body.get("assigned_partitions", 0)))
            except (requests.RequestException, ValueError):
                assigned.append(0)
        if all(assigned) and sum(assigned) == PARTITIONS:
            return
        time.sleep(0.1)
    raise BenchError(f"partitions not shared by the daemons in {timeout:.0f} s: {assigned}")


def warm_up(
    stack: Stack, publisher: Publisher, standin: StandInProcess, daemons: Sequence[DaemonProcess]
) -> None:
    """All partitions assigned, then one message per partition ingested (imports, connections)."""
    _wait_assigned(daemons)
    publisher.one_per_partition(stack.warmup_files)
    standin.wait_for(len(stack.warmup_files), 60, alive=lambda: _check(daemons))
    _wait_assigned(daemons)


def _check(daemons: Sequence[DaemonProcess]) -> None:
    for daemon in daemons:
        daemon.check_alive()


def requests_per_file(
    before: dict[str, int], after: dict[str, int], files: int
) -> dict[str, float]:
    """Stand-in request counts per route and status that the measured files caused, per file."""
    return {
        key: round((after.get(key, 0) - before.get(key, 0)) / files, 3)
        for key in sorted(after)
        if after.get(key, 0) != before.get(key, 0)
        and not key.startswith(("unrouted", "GET /health"))  # the daemon's readiness probe
    }


def _rate_series(
    stamps: Sequence[float], start: float, step: float = 1.0
) -> tuple[list[float], list[float]]:
    """Files/s over time, in ``step``-second bins since ``start``."""
    if not stamps:
        return [], []
    bins = int((max(stamps) - start) / step) + 1
    counts = [0] * bins
    for stamp in stamps:
        counts[max(0, int((stamp - start) / step))] += 1
    return [round((i + 0.5) * step, 2) for i in range(bins)], [c / step for c in counts]


Profiler = Callable[[Sequence[DaemonProcess]], AbstractContextManager[Any]]


@dataclass
class _Window:
    """Readings at the start and the end of the measured part of a run."""

    start: float = 0.0
    monotonic_start: float = 0.0
    measured_until: float = 0.0
    cpu_before: dict[str, float] = field(default_factory=dict)
    cpu_after: dict[str, float] = field(default_factory=dict)
    switches: int = 0
    requests_before: dict[str, int] = field(default_factory=dict)
    requests_after: dict[str, int] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)


def flow_run(
    stack: Stack,
    files: Sequence[PoolFile],
    settings: DaemonSettings,
    *,
    daemons: int = 1,
    keep_templates: bool = False,
    profiler: Profiler | None = None,
    latency: float = 0.0,
) -> FlowRun:
    """Announce ``files`` at once to ``daemons`` warmed-up daemons in one group; measure.

    ``profiler`` wraps the measured part (e.g. py-spy attached to the daemon); ``latency`` (s)
    is added by the stand-in to every request, as a remote SciCat's round trip would be.
    """
    standin = stack.standin("flow")
    if latency:
        standin.delay(latency)
    sampler = Sampler()
    window = _Window()
    try:
        topic = stack.topic("flow")
        group = stack.unique("group")
        procs = [stack.daemon("daemon", topic, group, standin, settings) for _ in range(daemons)]
        publisher = Publisher(stack.broker.bootstrap, topic)
        sampler.watch("standin", standin.pid)
        sampler.watch("broker", stack.broker_pid)
        with running(procs):
            for proc in procs:
                sampler.watch(proc.name, proc.pid)
            sampler.start()
            warm_up(stack, publisher, standin, procs)
            warm = len(stack.warmup_files)
            with profiler(procs) if profiler else contextlib.nullcontext():
                window.requests_before = standin.stats()["requests"]
                window.cpu_before = sampler.cpu()
                window.switches = -sum(thread_switches(p.pid) for p in procs)
                window.start = time.time()
                window.monotonic_start = time.monotonic()
                publisher.all_at_once(files)
                standin.wait_for(
                    warm + len(files), 120 + len(files) / 5, alive=lambda: _check(procs)
                )
                window.cpu_after = sampler.cpu()
                window.switches += sum(thread_switches(p.pid) for p in procs)
                window.measured_until = time.monotonic()
            window.requests_after = standin.stats()["requests"]
            window.blocks = standin.origdatablocks()
            templates = _templates(standin, files) if keep_templates else []
    finally:
        sampler.stop()
        standin.stop()
    return _flow_result(files, procs, settings, sampler, window, templates)


def _flow_result(  # noqa: PLR0917 - private, called once
    files: Sequence[PoolFile],
    procs: Sequence[DaemonProcess],
    settings: DaemonSettings,
    sampler: Sampler,
    window: _Window,
    templates: list[dict[str, Any]],
) -> FlowRun:
    wanted = {f.pid for f in files}
    stamps = [created_at(b) for b in window.blocks if b["datasetId"] in wanted]
    if len(stamps) != len(files):
        raise BenchError(f"{len(stamps)} origdatablocks for {len(files)} files (duplicates?)")
    seconds = max(stamps) - window.start
    cpu = {
        name: round(window.cpu_after[name] - window.cpu_before.get(name, 0.0), 3)
        for name in window.cpu_after
    }
    daemon_cpu = sum(cpu[p.name] for p in procs)
    main = sampler.samples[procs[0].name]
    wall = max(window.measured_until - window.monotonic_start, 1e-3)
    return FlowRun(
        files=len(files),
        daemons=len(procs),
        workers=settings.workers,
        seconds=round(seconds, 3),
        files_per_s=round(len(files) / seconds, 2),
        cpu_s_per_file=round(daemon_cpu / len(files), 5),
        peak_rss_mb=max(sampler.samples[p.name].peak_rss_mb for p in procs),
        cpu_s=cpu,
        foreign_cpu=round(foreign_cpu_share(cpu, wall), 3),
        switches_per_file=round(window.switches / len(files), 1),
        requests_per_file=requests_per_file(
            window.requests_before, window.requests_after, len(files)
        ),
        rate=_rate_series(stamps, window.start),
        rss=(main.times, main.rss_mb),
        templates=templates,
    )


# ------------------------------------------------------------------------------------------------
# 1 + 2. Throughput and the HTTP-only limit
# ------------------------------------------------------------------------------------------------


def _dto_properties(name: str) -> frozenset[str]:
    text = resources.files("scicat_ingestor.testing").joinpath("data", "openapi.json").read_text()
    return frozenset(json.loads(text)["components"]["schemas"][name]["properties"])


def _templates(standin: StandInProcess, files: Sequence[PoolFile]) -> list[dict[str, Any]]:
    """The bodies the daemon sent for the first file of each sample kind (store → DTO fields),
    and the SciCat URLs its schema fetched, for the HTTP-only run to repeat."""
    datasets = standin.datasets()
    blocks = {b["datasetId"]: b for b in standin.origdatablocks()}
    dataset_keys = _dto_properties("CreateRawDatasetObsoleteDto")
    block_keys = _dto_properties("CreateOrigDatablockDto")
    templates = []
    for file in files[:2]:
        dataset = {k: v for k, v in datasets[file.pid].items() if k in dataset_keys}
        block = {k: v for k, v in blocks[file.pid].items() if k in block_keys}
        kind = file.path.name.split("-", 2)[2].removesuffix(".hdf")
        templates.append({"dataset": dataset, "block": block, "urls": _schema_urls(kind, dataset)})
    return templates


def _schema_urls(kind: str, dataset: dict[str, Any]) -> list[str]:
    """The distinct SciCat (``SC``) URLs of the schema for ``kind`` (fetched once per file)."""
    schema = yaml.safe_load((SCHEMAS_DIR / f"{kind}.imsc.yml").read_text(encoding="utf-8"))
    urls = []
    for variable in schema["variables"].values():
        if variable.get("source") == "SC":
            url = str(variable["url"]).replace("<proposal_id>", str(dataset["proposalId"]))
            if url not in urls:
                urls.append(url)
    return urls


@dataclass(frozen=True)
class _HttpItem:
    urls: list[str]
    dataset: dict[str, Any]
    block: dict[str, Any]
    job_id: str
    by_metadata: bool = True


def _http_items(
    templates: list[dict[str, Any]], count: int, by_metadata: bool = True
) -> list[_HttpItem]:
    items = []
    for index in range(count):
        template = templates[index % len(templates)]
        job_id = str(uuid.uuid4())
        dataset = copy.deepcopy(template["dataset"])
        dataset["pid"] = f"20.500.12269/{job_id}"
        dataset["scientificMetadata"]["job_id"]["value"] = job_id
        block = {**template["block"], "datasetId": dataset["pid"]}
        items.append(_HttpItem(template["urls"], dataset, block, job_id, by_metadata))
    return items


def _http_file(client: SciCatClient, lookups: LookupCache, item: _HttpItem) -> None:
    """The SciCat calls the pipeline makes for one new file, in its order (``SC`` lookups through
    the same cache as the daemon's, so the calls per file match)."""
    for url in item.urls:
        lookups.get(url)
    where = {"scientificMetadata.job_id.value": item.job_id}
    if item.by_metadata and client.find_datasets(where, fields=["pid"], limit=1):
        raise BenchError(f"job {item.job_id} exists already")
    created = client.create_dataset(item.dataset)
    client.create_origdatablock({**item.block, "datasetId": created["pid"]})


@dataclass
class HttpRun:
    files: int
    threads: int
    seconds: float
    files_per_s: float
    requests_per_file: dict[str, float]
    cpu_s: dict[str, float]


def http_run(
    stack: Stack,
    templates: list[dict[str, Any]],
    files: int,
    threads: int,
    by_metadata: bool = True,
) -> HttpRun:
    """The same SciCat calls per file, from ``threads`` threads, no Kafka and no file work."""
    warm = _http_items(templates, threads * 2, by_metadata)
    items = _http_items(templates, files, by_metadata)
    standin = stack.standin("http")
    sampler = Sampler()
    sampler.watch("standin", standin.pid)
    options = SciCatOptions(host=standin.url, token=Secret(standin.token), api_version=API_VERSION)
    client = SciCatClient(options)
    lookups = LookupCache(client.get_json, options.lookup_cache_seconds)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="http") as pool:
            list(pool.map(lambda item: _http_file(client, lookups, item), warm))
            before = standin.stats()["requests"]
            cpu_before = sampler.cpu()
            started = time.perf_counter()
            list(pool.map(lambda item: _http_file(client, lookups, item), items))
            seconds = time.perf_counter() - started
            cpu_after = sampler.cpu()
            after = standin.stats()["requests"]
    finally:
        client.close()
        standin.stop()
    return HttpRun(
        files=files,
        threads=threads,
        seconds=round(seconds, 3),
        files_per_s=round(files / seconds, 2),
        requests_per_file=requests_per_file(before, after, files),
        cpu_s={k: round(cpu_after[k] - cpu_before.get(k, 0.0), 3) for k in cpu_after},
    )


def throughput(
    stack: Stack, plan: Plan, log: Log, profile: str = "production"
) -> tuple[ScenarioResult, ScenarioResult, list[FlowRun]]:
    """Scenarios 1 and 2, interleaved run by run so that both see the same machine state.

    ``profile`` (see ``stack.profile_overrides``): ``ess`` has no side files and checks by pid
    only; its HTTP-only run makes the same calls.
    """
    settings = DaemonSettings(workers=plan.workers, queue_size=plan.queue_size, profile=profile)
    by_metadata = profile != "ess"
    suffix = "" if profile == "production" else f"_{profile}"
    count, note = _calibrated_size(stack, plan, settings, log)
    files = stack.pool[:count]
    flows: list[FlowRun] = []
    https: list[HttpRun] = []
    for run in range(plan.runs):
        flow = flow_run(stack, files, settings, keep_templates=True)
        flows.append(flow)
        log(
            f"  throughput run {run + 1}: {flow.files_per_s:.1f} files/s, "
            f"{flow.cpu_s_per_file * 1000:.1f} ms CPU/file, peak RSS {flow.peak_rss_mb:.0f} MB"
        )
        http = http_run(stack, flow.templates, count, plan.workers, by_metadata)
        https.append(http)
        log(f"  HTTP-only run {run + 1}: {http.files_per_s:.1f} files/s")
    name = f"Throughput, {profile} profile ({count} files, {plan.workers} workers)"
    ratios = [f.files_per_s / h.files_per_s for f, h in zip(flows, https, strict=True)]
    result = ScenarioResult(
        "throughput" + suffix,
        {
            "profile": profile,
            "files": count,
            "files_asked": plan.files,
            "workers": plan.workers,
            "queue_size": plan.queue_size,
            "partitions": PARTITIONS,
        },
        rows=[
            Row(
                name,
                "throughput",
                "files/s",
                Spread.of([f.files_per_s for f in flows]),
                TARGET_FILES_PER_S,
            ),
            Row(name, "throughput / HTTP-only limit", "ratio", Spread.of(ratios), TARGET_RATIO),
            Row(
                name,
                "daemon CPU per file",
                "CPU-s",
                Spread.of([f.cpu_s_per_file for f in flows]),
                TARGET_CPU_PER_FILE,
            ),
            Row(
                name,
                "daemon peak RSS",
                "MB",
                Spread.of([f.peak_rss_mb for f in flows]),
                TARGET_RSS_MB,
            ),
            Row(
                name,
                "daemon thread switches per file",
                "switches",
                Spread.of([f.switches_per_file for f in flows]),
            ),
            Row(
                name,
                "stand-in CPU per file",
                "CPU-s",
                Spread.of([f.cpu_s["standin"] / f.files for f in flows]),
            ),
            Row(
                name,
                "broker CPU per file",
                "CPU-s",
                Spread.of([f.cpu_s["broker"] / f.files for f in flows]),
            ),
            Row(
                name,
                "machine used by other processes",
                "share",
                Spread.of([f.foreign_cpu for f in flows]),
            ),
        ],
        runs=[f.summary() for f in flows],
        series={"rate": [f.rate for f in flows], "rss": [f.rss for f in flows]},
    )
    calls_daemon = flows[0].requests_per_file
    calls_http = https[0].requests_per_file
    if note:
        result.notes.append(note)
    limit = ScenarioResult(
        "http_limit" + suffix,
        {"files": count, "threads": plan.workers, "profile": profile},
        rows=[
            Row(
                f"HTTP-only limit, {profile} calls ({count} files, {plan.workers} threads)",
                "throughput",
                "files/s",
                Spread.of([h.files_per_s for h in https]),
            ),
        ],
        runs=[vars(h) for h in https],
        notes=[
            "HTTP-only: SciCatClient from the bench process, one fresh stand-in per phase; "
            f"SciCat calls per file, daemon: {_calls(calls_daemon)}; "
            f"HTTP-only: {_calls(calls_http)}"
            + ("" if calls_daemon == calls_http else " (**the calls differ**)"),
        ],
    )
    return result, limit, flows


def _calibrated_size(
    stack: Stack, plan: Plan, settings: DaemonSettings, log: Log
) -> tuple[int, str]:
    """Files per throughput run: ``plan.files``, unless a run would take over ``run_seconds``.

    A short first run measures the rate (and warms the page cache); it is not reported.
    """
    if plan.calibration_files <= 0 or plan.calibration_files >= plan.files:
        return plan.files, ""
    probe = flow_run(stack, stack.pool[: plan.calibration_files], settings)
    seconds = plan.files / probe.files_per_s
    log(
        f"  calibration: {probe.files_per_s:.1f} files/s, {plan.files} files would take "
        f"{seconds:.0f} s"
    )
    if seconds <= plan.run_seconds:
        return plan.files, ""
    count = max(plan.calibration_files, int(probe.files_per_s * plan.run_seconds) // 100 * 100)
    note = (
        f"Throughput: {plan.files} files per run would take {seconds:.0f} s at the calibrated "
        f"{probe.files_per_s:.0f} files/s (> {plan.run_seconds:.0f} s, too long for "
        f"{plan.runs} runs within the 15 min budget), so runs use {count} files; scale-out too."
    )
    log(f"  note: {note}")
    return count, note


def _calls(calls: dict[str, float]) -> str:
    return ", ".join(f"{key} x{value:g}" for key, value in calls.items())


# ------------------------------------------------------------------------------------------------
# 3. Latency at half the measured maximum rate
# ------------------------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    figures = {f"p{q}": round(_percentile(values, q / 100), 2) for q in (50, 95, 99)}
    figures["max"] = round(max(values), 2)
    return figures


def latency(stack: Stack, plan: Plan, max_rate: float, log: Log) -> ScenarioResult:
    """Messages at a steady half of the measured throughput; publish → origdatablock created.

    The consumer's ``fetch.wait.max.ms`` is ``plan.latency_fetch_wait_ms``: Tansu holds every
    fetch that long even when a message arrives meanwhile (Kafka answers at once), so librdkafka's
    500 ms default would measure the broker, not the ingestor.
    """
    rate = max_rate / 2
    count = min(len(stack.pool), max(50, round(rate * plan.latency_seconds)))
    files = stack.pool[:count]
    settings = DaemonSettings(
        workers=plan.workers,
        queue_size=plan.queue_size,
        fetch_wait_max_ms=plan.latency_fetch_wait_ms,
    )
    runs: list[dict[str, dict[str, float]]] = []
    samples: list[float] = []
    for run in range(plan.runs):
        standin = stack.standin("latency")
        try:
            topic = stack.topic("latency")
            proc = stack.daemon("daemon", topic, stack.unique("group"), standin, settings)
            publisher = Publisher(stack.broker.bootstrap, topic)
            with running([proc]):
                warm_up(stack, publisher, standin, [proc])
                published = publisher.paced(files, rate)
                standin.wait_for(
                    len(stack.warmup_files) + count, 120 + count / 5, alive=proc.check_alive
                )
                blocks = standin.origdatablocks()
        finally:
            standin.stop()
        created = {b["datasetId"]: created_at(b) for b in blocks}
        latencies = [(created[f.pid] - published[f.uuid]) * 1000 for f in files]
        durations = proc.ingest_seconds()
        pipeline = [durations[f.pid] * 1000 for f in files if f.pid in durations]
        samples.extend(latencies)
        figures = {"end_to_end": percentiles(latencies)}
        if pipeline:
            figures["pipeline"] = percentiles(pipeline)
        runs.append(figures)
        log(
            f"  latency run {run + 1} at {rate:.0f} files/s: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in figures["end_to_end"].items())
            + (f" (pipeline alone p50 {figures['pipeline']['p50']:.0f} ms)" if pipeline else "")
        )
    name = f"Latency at {rate:.0f} files/s ({count} files)"
    rows = [
        Row(
            name,
            f"{q} publish → origdatablock",
            "ms",
            Spread.of([r["end_to_end"][q] for r in runs]),
            TARGET_P99_MS if q == "p99" else None,
        )
        for q in ("p50", "p95", "p99")
    ]
    if all("pipeline" in r for r in runs):
        rows += [
            Row(
                name,
                f"{q} of it in the pipeline (daemon log)",
                "ms",
                Spread.of([r["pipeline"][q] for r in runs]),
            )
            for q in ("p50", "p99")
        ]
    return ScenarioResult(
        "latency",
        {
            "rate": rate,
            "files": count,
            "workers": plan.workers,
            "fetch_wait_max_ms": plan.latency_fetch_wait_ms,
        },
        rows=rows,
        runs=runs,
        series={
            "latency_ms": [round(s, 2) for s in samples],
            "percentiles": percentiles(samples),
        },
        notes=[
            "Latency: publish time from the bench's clock, creation time from the stand-in's "
            "origdatablock createdAt (ms resolution, same machine clock); 'in the pipeline' is "
            "the duration the daemon logs per file (schema, file, SciCat calls), the rest is "
            "Kafka delivery, polling and queueing. The consumer runs with fetch.wait.max.ms="
            f"{plan.latency_fetch_wait_ms} here: Tansu holds a fetch for fetch.wait.max.ms even "
            "when a message arrives meanwhile (measured: produce→consume p50 252 ms with the "
            "500 ms default), which Kafka does not.",
        ],
    )


# ------------------------------------------------------------------------------------------------
# 4. Backlog memory
# ------------------------------------------------------------------------------------------------


def backlog(stack: Stack, plan: Plan, log: Log) -> ScenarioResult:
    """``plan.backlog`` messages waiting before the daemon starts; RSS while it works on them.

    The run stops after ``plan.backlog_seconds`` even if messages are still waiting: the backlog
    stays in the topic the whole time, which is what the memory bound is about.
    """
    files = stack.pool[: plan.backlog]
    settings = DaemonSettings(workers=plan.workers, queue_size=plan.queue_size)
    runs: list[dict[str, float]] = []
    series: list[tuple[list[float], list[float]]] = []
    for run in range(plan.backlog_runs):
        standin = stack.standin("backlog")
        sampler = Sampler()
        try:
            topic = stack.topic("backlog")
            Publisher(stack.broker.bootstrap, topic).all_at_once(files)
            proc = stack.daemon("daemon", topic, stack.unique("group"), standin, settings)
            with running([proc]):
                sampler.watch(proc.name, proc.pid)
                sampler.start()
                started = time.monotonic()
                done = _work_off(standin, proc, len(files), started + plan.backlog_seconds)
                seconds = time.monotonic() - started
        finally:
            sampler.stop()
            standin.stop()
        samples = sampler.samples[proc.name]
        half = len(samples.rss_mb) // 2
        figures = {
            "ingested": done,
            "seconds": round(seconds, 1),
            "peak_rss_mb": samples.peak_rss_mb,
            "peak_rss_first_half_mb": max(samples.rss_mb[:half], default=0.0),
            "peak_rss_second_half_mb": max(samples.rss_mb[half:], default=0.0),
        }
        runs.append(figures)
        series.append((samples.times, samples.rss_mb))
        log(
            f"  backlog run {run + 1}: {done} of {len(files)} ingested in {seconds:.0f} s, peak "
            f"RSS {figures['peak_rss_mb']:.0f} MB (first half of the run "
            f"{figures['peak_rss_first_half_mb']:.0f}, second half "
            f"{figures['peak_rss_second_half_mb']:.0f})"
        )
    name = f"Backlog ({plan.backlog} messages waiting at start)"
    growth = [r["peak_rss_second_half_mb"] - r["peak_rss_first_half_mb"] for r in runs]
    result = ScenarioResult(
        "backlog",
        {"files": plan.backlog, "workers": plan.workers, "queue_size": plan.queue_size},
        rows=[
            Row(
                name,
                "daemon peak RSS",
                "MB",
                Spread.of([r["peak_rss_mb"] for r in runs]),
                TARGET_RSS_MB,
            ),
            Row(name, "peak RSS, 2nd half of the run - 1st half", "MB", Spread.of(growth)),
        ],
        runs=runs,
        series={"rss": series},
    )
    if any(r["ingested"] < len(files) for r in runs):
        result.notes.append(
            f"Backlog: each run stops after {plan.backlog_seconds:.0f} s (time budget) with "
            f"{min(r['ingested'] for r in runs):.0f}+ of {plan.backlog} ingested; the rest "
            "waits in the topic all along."
        )
    if plan.backlog_runs < 3:
        result.notes.append(
            f"Backlog: {plan.backlog_runs} run(s) only (time budget); the throughput runs' peak "
            "RSS is the same measurement with a smaller backlog."
        )
    return result


def _work_off(standin: StandInProcess, proc: DaemonProcess, total: int, deadline: float) -> int:
    """Wait until ``total`` origdatablocks exist or ``deadline``; return how many exist."""
    while True:
        done = int(standin.stats()["origdatablocks"])
        if done >= total or time.monotonic() >= deadline:
            return done
        proc.check_alive()
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------------
# 5. Hashing (bench/bench_hashing.py, owned by the ingest helper)
# ------------------------------------------------------------------------------------------------


def hashing(plan: Plan, workspace: Path, log: Log) -> ScenarioResult:
    """Run ``bench/bench_hashing.py`` and turn its JSON into rows."""
    repeat = max(plan.runs, 1)
    command = [
        sys.executable,
        str(Path(__file__).with_name("bench_hashing.py")),
        "--size-mib",
        str(plan.hashing_mib),
        "--repeat",
        str(repeat),
        "--dir",
        str(workspace),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"bench_hashing.py failed: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout)
    results = report["results"]
    ours, raw = results["ours"], results["raw_hashlib"]
    name = f"Hashing blake2b ({plan.hashing_mib} MiB file, page cache warm)"

    def speed(entry: dict[str, float]) -> Spread:
        mib = plan.hashing_mib
        return Spread(
            round(mib / entry["median_s"], 1),
            round(mib / entry["max_s"], 1),
            round(mib / entry["min_s"], 1),
            repeat,
        )

    ratio = report["ratio_ours_vs_raw"]
    log(f"  hashing: ours {ours['mib_per_s']} MiB/s, raw {raw['mib_per_s']} MiB/s, ratio {ratio}")
    return ScenarioResult(
        "hashing",
        {"file_mib": plan.hashing_mib, "repeat": repeat},
        rows=[
            Row(name, "files.checksum", "MiB/s", speed(ours)),
            Row(name, "raw hashlib.file_digest", "MiB/s", speed(raw)),
            Row(
                name,
                "ours / raw",
                "ratio",
                Spread(
                    ratio,
                    round(raw["min_s"] / ours["max_s"], 3),
                    round(raw["max_s"] / ours["min_s"], 3),
                    repeat,
                ),
                TARGET_HASH_RATIO,
            ),
        ],
        runs=[report],
        notes=[
            "Hashing: ratio = median raw time / median our time; its min-max pairs the "
            "slowest of one with the fastest of the other (bounds, not per-run ratios)."
        ],
    )


# ------------------------------------------------------------------------------------------------
# 6. Worker scaling, 7. scale-out
# ------------------------------------------------------------------------------------------------


def workers(stack: Stack, plan: Plan, log: Log) -> ScenarioResult:
    """Files/s by worker count, with the workers' turns (``ops/turns.py``) on, and off for the
    counts of ``plan.scaling_turns_off``. Counts and settings take turns run by run (each off run
    next to its on run), so that a change in the machine's speed during the scenario (seen here:
    ±30 % within a minute) hits them alike."""
    files = stack.pool[: plan.scaling_files]
    name = f"Workers ({plan.scaling_files} files)"
    variants = {(count, True) for count in plan.scaling_workers}
    variants |= {(count, False) for count in plan.scaling_turns_off}
    flows: dict[tuple[int, bool], list[FlowRun]] = {
        variant: [] for variant in sorted(variants, key=lambda v: (v[0], not v[1]))
    }
    for _ in range(plan.runs):
        for (count, turns), runs_of in flows.items():
            settings = DaemonSettings(workers=count, queue_size=plan.queue_size, worker_turns=turns)
            runs_of.append(flow_run(stack, files, settings))
    rows: list[Row] = []
    points: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for (count, turns), runs_of in flows.items():
        spread = Spread.of([f.files_per_s for f in runs_of])
        cpu = Spread.of([f.cpu_s_per_file for f in runs_of])
        switches = Spread.of([f.switches_per_file for f in runs_of])
        label = f"{count} worker(s)" + ("" if turns else ", turns off")
        rows.append(Row(name, label, "files/s", spread))
        if count in plan.scaling_turns_off:
            label = f"{count} worker(s), turns {'on' if turns else 'off'}"
            rows.append(Row(name, f"{label}: daemon CPU per file", "CPU-s", cpu))
            rows.append(
                Row(name, f"{label}: daemon thread switches per file", "switches", switches)
            )
        points[turns].append(
            {
                "workers": count,
                "median": spread.median,
                "min": spread.min,
                "max": spread.max,
                "cpu_s_per_file": cpu.median,
                "switches_per_file": switches.median,
            }
        )
        log(
            f"  {count:2d} worker(s), turns {'on ' if turns else 'off'}: "
            f"{spread.median:.1f} files/s ({spread.min:.1f}-{spread.max:.1f}), "
            f"{cpu.median * 1000:.1f} ms CPU/file, {switches.median:.0f} thread switches/file"
        )
    rows += _paired_ratios(name, flows, plan)
    runs = [f.summary() | {"worker_turns": turns} for (_, turns), of in flows.items() for f in of]
    return ScenarioResult(
        "workers",
        {"files": plan.scaling_files, "turns_off": list(plan.scaling_turns_off)},
        rows=rows,
        runs=runs,
        series={"points": points[True], "points_turns_off": points[False]},
    )


def _paired_ratios(
    name: str, flows: dict[tuple[int, bool], list[FlowRun]], plan: Plan
) -> list[Row]:
    """Files/s ratios of runs made next to each other: many workers to one (turns on), and turns
    off to on at each count measured both ways."""
    rows: list[Row] = []

    def ratio(label: str, top: list[FlowRun], bottom: list[FlowRun], target: Target | None) -> None:
        values = [a.files_per_s / b.files_per_s for a, b in zip(top, bottom, strict=True)]
        rows.append(Row(name, label, "ratio", Spread.of(values), target))

    if (1, True) in flows and (plan.workers, True) in flows and plan.workers != 1:
        many, one = flows[plan.workers, True], flows[1, True]
        ratio(f"{plan.workers} workers / 1 worker", many, one, TARGET_SCALING)
    for count in plan.scaling_turns_off:
        if (count, True) in flows:
            off, on = flows[count, False], flows[count, True]
            ratio(f"{count} worker(s): turns off / on", off, on, None)
    return rows


def scale_out(stack: Stack, plan: Plan, log: Log, single: Sequence[FlowRun] = ()) -> ScenarioResult:
    """Two daemons in one consumer group against one, same files, same settings.

    ``single``: one-daemon runs already measured with the same settings (the throughput runs);
    their size is used.
    """
    count = single[0].files if single else plan.scaleout_files
    files = stack.pool[:count]
    settings = DaemonSettings(workers=plan.workers, queue_size=plan.queue_size)
    one = list(single) or [flow_run(stack, files, settings) for _ in range(plan.runs)]
    two = [flow_run(stack, files, settings, daemons=2) for _ in range(plan.runs)]
    name = f"Scale-out ({count} files, {plan.workers} workers each)"
    alone = Spread.of([f.files_per_s for f in one])
    double = Spread.of([f.files_per_s for f in two])
    log(f"  one daemon {alone.median:.1f} files/s, two daemons {double.median:.1f} files/s")
    return ScenarioResult(
        "scale_out",
        {"files": count, "workers": plan.workers},
        rows=[
            Row(name, "1 daemon", "files/s", alone),
            Row(name, "2 daemons, one group", "files/s", double),
            Row(
                name,
                "2 daemons / 1 daemon",
                "ratio",
                Spread.of([t.files_per_s / o.files_per_s for o, t in zip(one, two, strict=True)]),
            ),
        ],
        runs=[f.summary() for f in (*one, *two)],
    )
