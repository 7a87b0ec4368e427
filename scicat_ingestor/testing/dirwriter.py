"""Writers for the watch trigger's tests, demo and benchmark: NeXus files written into a directory
by concurrent writers, some slowly (holding the HDF5 lock for seconds before the last write).

Each file is a copy of a sample with a fresh ``/entry/entry_identifier_uuid`` (so a distinct
dataset for SciCat) and records when its writer closed it.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py

from scicat_ingestor.testing.filewriter import SAMPLE_FILES, UUID_PATH


@dataclass(frozen=True)
class DirFile:
    """One written file; ``closed_at`` is the wall-clock time its writer closed it."""

    path: Path
    entry_uuid: str
    closed_at: float


def write_file(template: Path, dest: Path, hold: float = 0.0) -> DirFile:
    """Copy ``template`` to ``dest``, then open it with h5py, keep it open (and locked) for
    ``hold`` seconds, write the entry uuid and close: the file is final only at the close."""
    entry_uuid = str(uuid.uuid4())
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    with h5py.File(dest, "r+") as nexus:
        if hold > 0:
            time.sleep(hold)
        dataset = nexus[UUID_PATH]
        info = h5py.check_string_dtype(dataset.dtype)
        dataset[...] = entry_uuid.encode(info.encoding if info else "utf-8")
    return DirFile(dest, entry_uuid, time.time())


class DirectoryWriter:
    """Writes numbered files into ``data_dir`` with ``writers`` threads; thread-safe."""

    def __init__(self, data_dir: Path, writers: int = 8) -> None:
        self.data_dir = data_dir
        self.writers = writers
        self._count = 0
        self._lock = threading.Lock()

    def _next(self, prefix: str) -> tuple[Path, Path]:
        """The next (template, destination): the samples alternate, numbering never repeats."""
        with self._lock:
            self._count += 1
            number = self._count
        template = SAMPLE_FILES[number % len(SAMPLE_FILES)]
        return template, self.data_dir / f"{prefix}-{number:06d}-{template.stem}.nxs"

    def write(
        self, count: int, prefix: str = "w", slow_every: int = 0, hold: float = 0.0
    ) -> list[DirFile]:
        """Write ``count`` files concurrently; every ``slow_every``-th holds its lock ``hold`` s."""

        def one(index: int) -> DirFile:
            slow = slow_every > 0 and index % slow_every == 0
            return write_file(*self._next(prefix), hold if slow else 0.0)

        with ThreadPoolExecutor(self.writers, thread_name_prefix="dirwriter") as pool:
            return list(pool.map(one, range(count)))
