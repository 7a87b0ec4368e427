"""Checksum speed: ``files.checksum`` against raw hashlib on a 1 GiB file; prints JSON.

"raw" is ``hashlib.file_digest`` (the stdlib's own streaming loop); "upstream" is the ESS ingestor's
loop (``f.read(128 KiB)`` into a new bytes object each time), shown for context. Each variant runs
once to warm the page cache, then ``--repeat`` times; the median and min-max are reported.
``ratio`` = raw time / our time (1.0 = as fast as raw hashlib; the target is ≥ 0.8).

    .venv/bin/python bench/bench_hashing.py [--size-mib 1024] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scicat_ingestor.ingest.files import checksum

MIB = 1024 * 1024


def raw_hashlib(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "blake2b").hexdigest()


def upstream_loop(path: Path) -> str:
    digest = hashlib.new("blake2b")
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(128 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ours(path: Path) -> str:
    return checksum(path, "blake2b")


def make_file(path: Path, size_mib: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for _ in range(size_mib):
            out.write(block)


def timed(fn: Callable[[Path], str], path: Path, repeat: int) -> tuple[str, list[float]]:
    digest = fn(path)  # warm-up: page cache and allocator
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        if fn(path) != digest:
            raise RuntimeError(f"{fn.__name__}: digest changed between runs")
        times.append(time.perf_counter() - start)
    return digest, times


def summary(times: list[float], size_mib: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "mib_per_s": round(size_mib / median, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the temporary file goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.bin"
        make_file(path, args.size_mib)
        results = {}
        digests = set()
        for fn in (ours, raw_hashlib, upstream_loop):
            digest, times = timed(fn, path, args.repeat)
            digests.add(digest)
            results[fn.__name__] = summary(times, args.size_mib)
    if len(digests) != 1:
        raise RuntimeError("the variants disagree on the digest")
    report = {
        "file_mib": args.size_mib,
        "repeat": args.repeat,
        "algorithm": "blake2b",
        "results": results,
        "ratio_ours_vs_raw": round(
            results["raw_hashlib"]["median_s"] / results["ours"]["median_s"], 3
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
