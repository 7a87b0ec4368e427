"""``python -m bench.thumbnails``: what ``ingestion.thumbnail.enabled`` costs, and which renderer.

Two parts, results in ``bench/results/<date>-thumbnails.{json,md}``:

* **daemon**: the throughput flow (broker, stand-in and daemon as processes, production-like
  config) with thumbnails off and on, interleaved run by run. Every file is a copy of an ESS
  sample file with a 300 x 400 gzip-chunked detector image as its default plot (so "on" draws
  and attaches a picture for each file). Files/s runs from the first publish until the last
  origdatablock (off) or the last attachment (on) exists; daemon CPU-s per file from psutil.
* **renderers**: in one process, one picture of the same 2-D and 1-D data made by this
  project's Pillow renderer and by matplotlib's Agg (the obvious alternative), median of 30;
  plus what importing matplotlib costs a worker process (time, RSS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py

from bench.stack import (
    PARTITIONS,
    DaemonProcess,
    DaemonSettings,
    Publisher,
    Sampler,
    Stack,
    daemon_config,
    running,
    write_pool,
)
from scicat_ingestor.ingest.thumbnail import Axis, make_thumbnail, render_image, render_line
from scicat_ingestor.testing.nexus_plots import add_image_2d, write_plot_file

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ATTACHED = "POST /datasets/{pid}/attachments 201"


def _with_plots(files: list[Any]) -> None:
    for file in files:
        with h5py.File(file.path, "a") as h5:
            add_image_2d(h5)


def _count(stats: dict[str, Any], enabled: bool) -> int:
    return int(stats["requests"].get(ATTACHED, 0)) if enabled else int(stats["origdatablocks"])


def daemon_run(stack: Stack, files: list[Any], enabled: bool) -> dict[str, float]:
    """One run: a fresh stand-in, topic and daemon; all files announced at once."""
    standin = stack.standin("thumb")
    sampler = Sampler()
    try:
        topic = stack.topic("thumb")
        name = stack.unique(f"daemon-{'on' if enabled else 'off'}")
        config = daemon_config(
            stack.workspace,
            name,
            bootstrap=stack.broker.bootstrap,
            topic=topic,
            group_id=stack.unique("group"),
            standin=standin,
            data_dir=stack.data_dir,
            settings=DaemonSettings(),
        )
        config["ingestion"]["thumbnail"] = {"enabled": enabled}
        proc = DaemonProcess(stack.workspace, name, config)
        publisher = Publisher(stack.broker.bootstrap, topic)
        with running([proc]):
            sampler.watch("daemon", proc.pid)
            sampler.start()
            publisher.one_per_partition(stack.warmup_files)  # assignment, imports, connections
            warm = len(stack.warmup_files)
            _wait(standin, warm, enabled, proc)
            cpu_before = sampler.cpu()["daemon"]
            started = time.monotonic()
            publisher.all_at_once(files)
            _wait(standin, warm + len(files), enabled, proc)
            seconds = time.monotonic() - started
            cpu = sampler.cpu()["daemon"] - cpu_before
            peak = sampler.samples["daemon"].peak_rss_mb
    finally:
        sampler.stop()
        standin.stop()
    return {
        "files": len(files),
        "files_per_s": round(len(files) / seconds, 2),
        "cpu_ms_per_file": round(cpu / len(files) * 1000, 2),
        "peak_rss_mb": round(peak, 1),
    }


def _wait(standin: Any, count: int, enabled: bool, proc: DaemonProcess) -> None:
    deadline = time.monotonic() + 120 + count / 5
    while _count(standin.stats(), enabled) < count:
        proc.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} files done in time ({proc.output_tail()})")
        time.sleep(0.05)


# ---- renderers ---------------------------------------------------------------------------


def _median_ms(action: Any, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _matplotlib_png(draw: Any) -> bytes:
    """A 400 x 300 px matplotlib Agg figure with ``draw(figure, axes)`` on it, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3), dpi=100)
    FigureCanvasAgg(figure)
    draw(figure, figure.add_subplot())
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _matplotlib_image(values: Any) -> bytes:
    from matplotlib.colors import LogNorm

    def draw(figure: Any, axes: Any) -> None:
        image = axes.imshow(values, origin="lower", aspect="auto", norm=LogNorm())
        figure.colorbar(image)
        axes.set(xlabel="x [mm]", ylabel="y [mm]", title="data (log)")

    return _matplotlib_png(draw)


def _matplotlib_line(x: Any, y: Any) -> bytes:
    def draw(figure: Any, axes: Any) -> None:
        axes.plot(x, y)
        axes.set(yscale="log", xlabel="tof [us]", ylabel="counts", title="counts")

    return _matplotlib_png(draw)


def _import_cost(modules: str) -> dict[str, float]:
    """Time and resident memory that importing ``modules`` adds to a fresh interpreter."""
    code = (
        "import time, psutil; p = psutil.Process(); before = p.memory_info().rss; "
        f"t = time.perf_counter(); import {modules}; t = time.perf_counter() - t; "
        "print(t, p.memory_info().rss - before)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return {"import_ms": round(float(out[0]) * 1000, 1), "rss_mb": round(int(out[1]) / 2**20, 1)}


def renderers(workdir: Path) -> dict[str, Any]:
    image_file = write_plot_file(workdir / "image.h5", "image_2d")
    line_file = write_plot_file(workdir / "line.h5", "line_1d")
    with h5py.File(image_file) as image_h5, h5py.File(line_file) as line_h5:
        image = image_h5["/entry/detector_image/data"][()]
        tof = line_h5["/entry/spectrum/tof"][()]
        counts = line_h5["/entry/spectrum/counts"][()]
        ours_image = _median_ms(lambda: make_thumbnail(image_h5, 1_000_000))
        ours_line = _median_ms(lambda: make_thumbnail(line_h5, 1_000_000))
    y_axis, x_axis = Axis("y", "mm", "-15", "15"), Axis("x", "mm", "-20", "20")
    tof_axis = Axis("tof", "us", "1000", "71000", tof)
    cost = {
        "pillow": _import_cost("PIL.Image, PIL.ImageDraw, PIL.ImageFont"),
        "matplotlib": _import_cost(
            "matplotlib.figure, matplotlib.backends.backend_agg, matplotlib.colors"
        ),
    }
    _matplotlib_image(image)  # first figure: font cache etc. not counted
    return {
        "pillow_2d_ms (read + render + PNG)": ours_image,
        "pillow_1d_ms (read + render + PNG)": ours_line,
        "pillow_2d_ms (render + PNG only)": _median_ms(
            lambda: render_image(image, "data", y_axis, x_axis)
        ),
        "pillow_1d_ms (render + PNG only)": _median_ms(
            lambda: render_line(counts, "counts", tof_axis)
        ),
        "matplotlib_2d_ms (render + PNG only)": _median_ms(lambda: _matplotlib_image(image)),
        "matplotlib_1d_ms (render + PNG only)": _median_ms(lambda: _matplotlib_line(tof, counts)),
        "pillow_png_bytes": len(make_thumbnail(h5py.File(image_file), 1_000_000).png),
        "matplotlib_png_bytes": len(_matplotlib_image(image)),
        "import": cost,
    }


# ---- main -----------------------------------------------------------------------------------


def _table(daemon: list[dict[str, Any]], render: dict[str, Any]) -> str:
    lines = [
        "| thumbnails | files/s (median, min-max) | daemon CPU ms/file | peak RSS MB |",
        "|---|---:|---:|---:|",
    ]
    for enabled in (False, True):
        runs = [r for r in daemon if r["enabled"] == enabled]
        fps = [r["files_per_s"] for r in runs]
        cpu = [r["cpu_ms_per_file"] for r in runs]
        rss = [r["peak_rss_mb"] for r in runs]
        lines.append(
            f"| {'on' if enabled else 'off'} | {statistics.median(fps):.1f} "
            f"({min(fps):.1f}-{max(fps):.1f}) | {statistics.median(cpu):.1f} "
            f"({min(cpu):.1f}-{max(cpu):.1f}) | {max(rss):.0f} |"
        )
    lines += ["", "| renderer figure | value |", "|---|---:|"]
    for key, value in render.items():
        if key == "import":
            for lib, figures in value.items():
                lines.append(
                    f"| import {lib} (ms / MB RSS) | {figures['import_ms']} / {figures['rss_mb']} |"
                )
        else:
            lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbnails", description=__doc__)
    parser.add_argument("--files", type=int, default=300, help="files per run (300)")
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (3)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-thumb-") as tmp:
        workdir = Path(tmp)
        render = renderers(workdir)
        print(json.dumps(render, indent=1), flush=True)
        daemon: list[dict[str, Any]] = []
        with Stack(workdir, pool_size=0) as stack:
            _with_plots(stack.warmup_files)
            files = write_pool(stack.data_dir / "raw", args.files, "thumb")
            _with_plots(files)
            for run in range(args.runs):
                order = (False, True) if run % 2 == 0 else (True, False)
                for enabled in order:
                    result = {"enabled": enabled, **daemon_run(stack, files, enabled)}
                    print(result, flush=True)
                    daemon.append(result)
    stamp = dt.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {"python": sys.version.split()[0], "cpus": len(os.sched_getaffinity(0))}
    (args.out / f"{stamp}-thumbnails.json").write_text(
        json.dumps(
            {"machine": machine, "partitions": PARTITIONS, "daemon": daemon, "renderers": render},
            indent=1,
        )
    )
    table = _table(daemon, render)
    (args.out / f"{stamp}-thumbnails.md").write_text(
        f"# Thumbnails on vs off ({stamp}, {args.files} files x {args.runs} runs)\n\n{table}"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
