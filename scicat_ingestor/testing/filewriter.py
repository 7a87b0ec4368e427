"""Fake ESS file-writer: copies sample NeXus files and announces them with ``wrdn`` messages.

Each copy gets a fresh ``/entry/entry_identifier_uuid``, and its job id is that same uuid, as
the ESS file-writer relates them, so every announced file is a distinct dataset for SciCat.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py
from confluent_kafka import KafkaError, Message, Producer
from streaming_data_types import serialise_pl72, serialise_wrdn

from scicat_ingestor.testing.broker import producer_test_config

logger = logging.getLogger("scicat_ingestor.testing.filewriter")

DATA_DIR = Path(__file__).parent / "data"
SAMPLE_FILES: tuple[Path, ...] = (DATA_DIR / "small-coda.hdf", DATA_DIR / "small-ymir.hdf")
UUID_PATH = "/entry/entry_identifier_uuid"


def write_nexus_copy(template: Path, dest: Path, entry_uuid: str | None = None) -> str:
    """Copy ``template`` to ``dest`` and set its entry uuid (same string dtype); return the uuid.

    Everything else in the file stays as in the template. On error ``dest`` is removed.
    """
    entry_uuid = entry_uuid if entry_uuid is not None else str(uuid.uuid4())
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)  # not copy(): the templates may be read-only
    try:
        with h5py.File(dest, "r+") as nexus:
            dataset = nexus.get(UUID_PATH)
            if not isinstance(dataset, h5py.Dataset):
                raise ValueError(f"{template}: no dataset {UUID_PATH}")
            string_info = h5py.check_string_dtype(dataset.dtype)
            if string_info is None:
                raise ValueError(f"{template}: {UUID_PATH} is not a string ({dataset.dtype})")
            dataset[...] = entry_uuid.encode(string_info.encoding)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return entry_uuid


def wrdn_message(  # noqa: PLR0917 - mirrors serialise_wrdn, agreed signature
    file_name: str,
    job_id: str,
    error_encountered: bool = False,
    service_id: str = "fake-filewriter",
    metadata: str | None = None,
    message: str | None = None,
) -> bytes:
    """A ``wrdn`` (writing finished) flatbuffer as the ESS file-writer sends it."""
    data: bytes = serialise_wrdn(
        service_id=service_id,
        job_id=job_id,
        error_encountered=error_encountered,
        file_name=file_name,
        metadata=metadata,
        message=message,
    )
    return data


def run_start_message(file_name: str, job_id: str, run_name: str = "run") -> bytes:
    """A ``pl72`` (run start) flatbuffer: the file-writer is about to write ``file_name``."""
    data: bytes = serialise_pl72(job_id, file_name, run_name=run_name, service_id="fake-filewriter")
    return data


@dataclass(frozen=True)
class WrittenFile:
    """A NeXus file the fake file-writer wrote; ``job_id`` equals ``entry_uuid``."""

    path: Path
    job_id: str
    entry_uuid: str


class FakeFileWriter:
    """Writes NeXus copies into ``data_dir`` and announces them on ``topic``.

    File names keep the template stem (``run-000001-small-coda.hdf``) so schema selectors such
    as ``filename:contains:small-coda`` match. Templates are used round-robin.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        data_dir: Path,
        templates: Sequence[Path] | None = None,
    ) -> None:
        self.topic = topic
        self.data_dir = data_dir
        self.templates = tuple(templates if templates is not None else SAMPLE_FILES)
        if not self.templates:
            raise ValueError("FakeFileWriter needs at least one template NeXus file")
        self._producer = Producer(producer_test_config(bootstrap))
        self._written = 0
        self._failures: list[str] = []

    def __enter__(self) -> FakeFileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, count: int, prefix: str = "run") -> list[WrittenFile]:
        """Write ``count`` new files; numbering continues across calls."""
        files = []
        for _ in range(count):
            template = self.templates[self._written % len(self.templates)]
            self._written += 1
            dest = self.data_dir / f"{prefix}-{self._written:06d}-{template.name}"
            if dest.exists():
                raise FileExistsError(f"{dest} exists already: use another prefix or data_dir")
            entry_uuid = write_nexus_copy(template, dest)
            files.append(WrittenFile(path=dest, job_id=entry_uuid, entry_uuid=entry_uuid))
        logger.debug("wrote %d file(s) to %s", count, self.data_dir)
        return files

    def announce(
        self,
        files: Sequence[WrittenFile],
        partition: int | None = None,
        key: bytes | None = None,
    ) -> None:
        """Produce one ``wrdn`` per file (absolute path) and wait until all are delivered."""
        for written in files:
            value = wrdn_message(str(written.path.absolute()), written.job_id)
            self._produce(value, key, partition)
        self.flush()
        logger.debug("announced %d file(s) on %s", len(files), self.topic)

    def announce_run_start(
        self, files: Sequence[WrittenFile], partition: int | None = None
    ) -> None:
        """Produce one ``pl72`` per file (absolute path); the file need not exist yet."""
        for written in files:
            value = run_start_message(str(written.path.absolute()), written.job_id)
            self._produce(value, None, partition)
        self.flush()

    def write_and_announce(self, count: int, prefix: str = "run") -> list[WrittenFile]:
        """``write`` then ``announce``: the file exists before its message is sent."""
        files = self.write(count, prefix)
        self.announce(files)
        return files

    def produce_raw(
        self, value: bytes | None, key: bytes | None = None, partition: int | None = None
    ) -> None:
        """Produce arbitrary bytes (poison messages, ``None`` for a tombstone) and flush."""
        self._produce(value, key, partition)
        self.flush()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for delivery; raise ``RuntimeError`` naming what was not delivered."""
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} message(s) still queued after {timeout} s")
        if failures:
            raise RuntimeError(f"delivery to topic {self.topic!r} failed: {'; '.join(failures)}")

    def close(self) -> None:
        """Deliver everything still queued; safe to call twice."""
        self.flush()

    def _produce(self, value: bytes | None, key: bytes | None, partition: int | None) -> None:
        if partition is None:
            self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
        else:
            self._producer.produce(
                self.topic, value, key, partition=partition, on_delivery=self._on_delivery
            )
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"partition {message.partition()}: {error}")


def main(argv: Sequence[str] | None = None) -> int:
    """Write and announce ``--count`` files; print their paths."""
    parser = argparse.ArgumentParser(
        prog="python -m scicat_ingestor.testing.filewriter",
        description="Write copies of sample NeXus files and announce them with wrdn messages.",
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", required=True, help="topic to announce on")
    parser.add_argument("--data-dir", required=True, type=Path, help="where to write the files")
    parser.add_argument("--count", type=int, default=1, help="number of files (default 1)")
    parser.add_argument("--prefix", default="run", help="file name prefix (default run)")
    parser.add_argument(
        "--template", action="append", type=Path, help="template NeXus file (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        with FakeFileWriter(args.bootstrap, args.topic, args.data_dir, args.template) as writer:
            files = writer.write_and_announce(args.count, args.prefix)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for written in files:
        print(written.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
