"""Where the daemon's time goes: py-spy records the daemon process during one throughput run.

``python -m bench --only throughput profile`` adds this scenario. py-spy samples the daemon from the
outside (no instrumentation inside the process, so the figures stay honest) in two passes over the
same kind of run: all threads on CPU, and only the thread holding the GIL. If the GIL-holding
samples are close to one core's worth of wall time, the daemon is limited by the GIL, not by SciCat.
The top frames (self and inclusive) go into the results; the raw collapsed stacks stay in the work
directory (flame-graph input).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Row, ScenarioResult, Spread
from bench.scenarios import Log, Plan, flow_run
from bench.stack import BenchError, DaemonProcess, DaemonSettings, Stack

RATE_HZ = 200
TOP = 25


def py_spy() -> str:
    """The py-spy executable next to this Python (``pip install py-spy``)."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


@dataclass
class Recording:
    """Collapsed stacks from one py-spy run."""

    stacks: Counter[str]
    seconds: float

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def top(self, inclusive: bool, count: int = TOP) -> list[tuple[str, float]]:
        """(frame, share of all samples) for the frames with the most samples."""
        totals: Counter[str] = Counter()
        for stack, samples in self.stacks.items():
            frames = stack.split(";")[1:]  # the first element is the thread
            if inclusive:
                for frame in set(frames):
                    totals[frame] += samples
            elif frames:
                totals[frames[-1]] += samples
        total = self.samples or 1
        return [(frame, round(n / total, 4)) for frame, n in totals.most_common(count)]


# Where a sample's time belongs: the first category any frame of its stack matches, in this order
# (so a log call made from the pipeline counts as logging, an HTTP call made by the schema engine's
# SC variables as SciCat HTTP).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/", "scicat_ingestor/ops/logs.py")),
    ("SciCat HTTP (requests/urllib3)", ("scicat_ingestor/scicat.py",)),
    ("h5py / NeXus reading", ("h5py/", "scicat_ingestor/nexus.py")),
    ("checksum", ("checksum (",)),
    ("side files (hash, message)", ("write_hash_file", "write_message_file")),
    ("file stats, paths", ("scicat_ingestor/files.py",)),
    ("schema engine", ("scicat_ingestor/schema/",)),
    ("Kafka poll loop", ("scicat_ingestor/source.py", "scicat_ingestor/daemon.py")),
    ("metrics / health", ("prometheus_client/", "scicat_ingestor/ops/")),
)


def categorise(stacks: Counter[str]) -> list[tuple[str, float]]:
    """Share of samples per category (see ``CATEGORIES``), largest first."""
    totals: Counter[str] = Counter()
    for stack, samples in stacks.items():
        name = next((n for n, marks in CATEGORIES if any(m in stack for m in marks)), "other")
        totals[name] += samples
    total = sum(totals.values()) or 1
    return [(name, round(n / total, 4)) for name, n in totals.most_common()]


def parse_collapsed(text: str) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


@contextlib.contextmanager
def recording(pid: int, output: Path, gil: bool, into: list[Recording]) -> Iterator[None]:
    """py-spy ``record`` on ``pid`` while the block runs; the result is appended to ``into``."""
    command = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
    ]
    if gil:
        command.append("--gil")
    with output.with_suffix(".log").open("wb") as log:
        spy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    if not output.exists():
        raise BenchError(f"py-spy wrote no profile; see {output.with_suffix('.log')}")
    into.append(Recording(parse_collapsed(output.read_text(errors="replace")), seconds))


def profile_run(stack: Stack, plan: Plan, log: Log) -> ScenarioResult:
    """Two throughput runs under py-spy: every thread on CPU, then the GIL holder only."""
    files = stack.pool[: plan.files]
    recordings: list[Recording] = []
    rates: list[float] = []
    for gil_only in (False, True):
        output = stack.workspace / "logs" / f"py-spy-{'gil' if gil_only else 'cpu'}.txt"

        def spy(procs: Sequence[DaemonProcess], output: Path = output, gil: bool = gil_only) -> Any:
            return recording(procs[0].pid, output, gil, recordings)

        settings = DaemonSettings(workers=plan.workers, queue_size=plan.queue_size)
        flow = flow_run(stack, files, settings, profiler=spy)
        rates.append(flow.files_per_s)
        log(
            f"  profiled run ({'GIL holder' if gil_only else 'all threads'}): "
            f"{flow.files_per_s:.1f} files/s"
        )
    cpu, gil = recordings
    busy = gil.samples / (gil.seconds * RATE_HZ)
    log(f"  GIL held {busy:.0%} of the wall time")
    log("  GIL-holder samples by part of the daemon:")
    for name, share in categorise(gil.stacks):
        log(f"    {share:6.1%}  {name}")
    for title, rec, inclusive in (
        ("self, all threads", cpu, False),
        ("inclusive, GIL holder", gil, True),
        ("self, GIL holder", gil, False),
    ):
        log(f"  top frames ({title}):")
        for frame, share in rec.top(inclusive, 12):
            log(f"    {share:6.1%}  {frame}")
    parts = ", ".join(f"{name} {share:.0%}" for name, share in categorise(gil.stacks))
    frames = "; ".join(f"{frame} {share:.1%}" for frame, share in gil.top(False, 8))
    return ScenarioResult(
        "profile",
        {"files": plan.files, "workers": plan.workers, "rate_hz": RATE_HZ},
        rows=[
            Row(
                f"Profile ({plan.files} files, py-spy attached)",
                "GIL held (share of wall time)",
                "ratio",
                Spread.of([round(busy, 3)]),
            ),
            Row(
                f"Profile ({plan.files} files, py-spy attached)",
                "throughput under py-spy",
                "files/s",
                Spread.of(rates),
            ),
        ],
        runs=[
            {
                "gil": label == "gil",
                "samples": rec.samples,
                "seconds": round(rec.seconds, 2),
                "categories": categorise(rec.stacks),
                "top_self": rec.top(False),
                "top_inclusive": rec.top(True),
            }
            for label, rec in (("cpu", cpu), ("gil", gil))
        ],
        notes=[
            f"Profile: the GIL was held {busy:.0%} of the measured wall time (py-spy --gil). "
            f"GIL-holder samples by part of the daemon: {parts}.",
            f"Profile: top frames by own GIL-holding time: {frames}.",
        ],
    )
