"""Watch-mode throughput: files written into a watched directory → origdatablocks in SciCat.

The daemon runs as in production (``python -m scicat_ingestor run``, 10 workers, queue 100) with
``ingestion.trigger: watch`` against the SciCat stand-in; no Kafka. Writers copy the sample NeXus
files into the directory as fast as they can while the daemon runs. Figures: files/s from the
first writer's close to the last origdatablock, and per-file latency from the writer's close to
its origdatablock (that includes ``watch.settle_seconds``, the wait that proves the file is
finished). Compare with the Kafka throughput row of ``make bench`` (same stand-in, same pipeline).
Run alone: ``python -m bench.watch [--files N] [--settle S]``; results go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.daemon_process import DaemonProcess, daemon_config, write_config
from scicat_ingestor.testing.dirwriter import DirectoryWriter
from scicat_ingestor.testing.scicat import SciCatStandIn

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "config" / "schemas"


def run(work: Path, files: int, writers: int, settle: float) -> dict[str, Any]:
    data = work / "data"
    data.mkdir()
    with SciCatStandIn() as standin:
        config = daemon_config(
            bootstrap="127.0.0.1:9",
            topics=["unused"],
            group_id="unused",
            scicat_url=standin.url,
            scicat_token=standin.token,
            schemas_directory=SCHEMAS,
            overrides={
                "ingestion.trigger": "watch",
                "ingestion.max_offline_ingestors": 10,
                "ingestion.queue_size": 100,
                "ingestion.file_handling.ingestor_files_directory": str(work / "side"),
                "ingestion.file_handling.file_path_type": "absolute",
                "watch.directories": [str(data)],
                "watch.state_file": str(work / "watch.sqlite"),
                "watch.settle_seconds": settle,
                "health_check.enabled": True,
                "health_check.port": free_port(),
                "logging.logging_level": "WARNING",
            },
        )
        path = write_config(work / "watch.yml", config)
        with DaemonProcess(path, work / "daemon.log") as daemon:
            time.sleep(2)  # imports, observer and start-up scan
            if not daemon.running:
                raise RuntimeError(f"daemon exited:\n{daemon.log_tail()}")
            written = DirectoryWriter(data, writers).write(files)
            deadline = time.monotonic() + 600
            while len(standin.origdatablocks) < files:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(standin.origdatablocks)} of {files} after 600 s")
                time.sleep(0.05)
            blocks = standin.origdatablocks
    closed = {str(f.path): f.closed_at for f in written}
    created = {block["dataFileList"][0]["path"]: _epoch(block["createdAt"]) for block in blocks}
    latencies = sorted(created[path] - closed[path] for path in closed)
    first_close, last_block = min(closed.values()), max(created.values())
    return {
        "files": files,
        "writers": writers,
        "settle_seconds": settle,
        "workers": 10,
        "files_per_s": round(files / (last_block - first_close), 1),
        "writing_s": round(max(closed.values()) - first_close, 2),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "latency_max_s": round(latencies[-1], 3),
    }


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__)
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scicat-watch-bench-") as work:
        result = run(Path(work), args.files, args.writers, args.settle)
    print(json.dumps(result, indent=2))
    stamp = time.strftime("%Y-%m-%d")
    out = ROOT / "bench" / "results" / f"{stamp}-watch"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(
        f"# Watch-mode throughput ({stamp}, one run)\n\n"
        f"{result['files']} files written by {result['writers']} writers into one watched "
        f"directory while the daemon ran (10 workers, settle {result['settle_seconds']:g} s, "
        "SciCat stand-in, no Kafka).\n\n"
        "| figure | value |\n|---|---:|\n"
        f"| throughput, first close → last origdatablock (files/s) | {result['files_per_s']} |\n"
        f"| writers' own time for all files (s) | {result['writing_s']} |\n"
        f"| latency close → origdatablock, p50 (s) | {result['latency_p50_s']} |\n"
        f"| latency close → origdatablock, p95 (s) | {result['latency_p95_s']} |\n"
        f"| latency close → origdatablock, max (s) | {result['latency_max_s']} |\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
