"""The fake ESS file-writer: NeXus copies with fresh uuids, wrdn messages through the broker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from streaming_data_types import deserialise_wrdn

from scicat_ingestor.testing import filewriter
from scicat_ingestor.testing.broker import read_messages
from scicat_ingestor.testing.brokers import HarnessBroker
from scicat_ingestor.testing.filewriter import (
    UUID_PATH,
    FakeFileWriter,
    wrdn_message,
    write_nexus_copy,
)
from scicat_ingestor.testing.plugin import ConsumerConfigFactory, FileWriterFactory, TopicFactory


def _contents(path: Path) -> dict[str, Any]:
    """Every group/dataset with its attributes and (for datasets) dtype and value."""
    items: dict[str, Any] = {}

    def visit(name: str, node: h5py.Group | h5py.Dataset) -> None:
        attrs = {key: np.asarray(value).tolist() for key, value in node.attrs.items()}
        if isinstance(node, h5py.Dataset):
            items[name] = (attrs, str(node.dtype), np.asarray(node[()]).tolist())
        else:
            items[name] = attrs

    with h5py.File(path, "r") as nexus:
        nexus.visititems(visit)
    return items


def test_sample_files_are_shipped(sample_nexus_files: tuple[Path, ...]) -> None:
    assert [path.name for path in sample_nexus_files] == ["small-coda.hdf", "small-ymir.hdf"]
    assert all(h5py.is_hdf5(path) for path in sample_nexus_files)


@pytest.mark.parametrize("template", filewriter.SAMPLE_FILES, ids=lambda path: path.stem)
def test_write_nexus_copy_changes_only_the_uuid(template: Path, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / template.name
    before = _contents(template)

    entry_uuid = write_nexus_copy(template, dest, "0f2f1b4e-6c43-4c1e-9a53-8f0e2a1c9d11")

    assert entry_uuid == "0f2f1b4e-6c43-4c1e-9a53-8f0e2a1c9d11"
    with h5py.File(dest, "r") as nexus, h5py.File(template, "r") as original:
        dataset, old = nexus[UUID_PATH], original[UUID_PATH]
        assert dataset[()] == entry_uuid.encode()
        assert dataset.dtype == old.dtype
        assert h5py.check_string_dtype(dataset.dtype) == h5py.check_string_dtype(old.dtype)
    after = _contents(dest)
    key = UUID_PATH.lstrip("/")
    assert after[key][:2] == before[key][:2]  # attributes and dtype of the uuid dataset kept
    assert after[key][2] != before[key][2]
    assert _contents(template) == before  # the template itself is untouched
    del after[key], before[key]
    assert after == before


def test_write_nexus_copy_makes_a_fresh_uuid_per_copy(tmp_path: Path) -> None:
    template = filewriter.SAMPLE_FILES[0]
    first = write_nexus_copy(template, tmp_path / "a.hdf")
    second = write_nexus_copy(template, tmp_path / "b.hdf")
    assert first != second
    with h5py.File(tmp_path / "b.hdf", "r") as nexus:
        assert nexus[UUID_PATH][()].decode() == second


def test_write_nexus_copy_without_uuid_dataset_names_the_file(tmp_path: Path) -> None:
    template = tmp_path / "bare.hdf"
    with h5py.File(template, "w") as nexus:
        nexus.create_group("entry")
    dest = tmp_path / "copy.hdf"
    with pytest.raises(ValueError, match=re.escape(f"{template}: no dataset {UUID_PATH}")):
        write_nexus_copy(template, dest)
    assert not dest.exists()


def test_wrdn_message_round_trips_every_field() -> None:
    decoded = deserialise_wrdn(
        wrdn_message(
            "/data/run.hdf",
            "job-1",
            error_encountered=True,
            service_id="writer-7",
            metadata='{"a": 1}',
            message="disk full",
        )
    )
    assert decoded.file_name == "/data/run.hdf"
    assert decoded.job_id == "job-1"
    assert decoded.error_encountered is True
    assert decoded.service_id == "writer-7"
    assert decoded.metadata == '{"a": 1}'
    assert decoded.message == "disk full"


@pytest.mark.integration
def test_write_names_keep_template_stem_and_continue_numbering(
    kafka_broker: HarnessBroker, file_writer: FileWriterFactory, kafka_topic: str, tmp_path: Path
) -> None:
    writer = file_writer(kafka_topic)
    names = [written.path.name for written in writer.write(2) + writer.write(1, prefix="x")]
    assert names == [
        "run-000001-small-coda.hdf",
        "run-000002-small-ymir.hdf",
        "x-000003-small-coda.hdf",
    ]
    with (
        FakeFileWriter(kafka_broker.bootstrap, kafka_topic, tmp_path) as again,
        pytest.raises(FileExistsError, match=r"run-000001-small-coda\.hdf exists already"),
    ):
        again.write(1)


@pytest.mark.integration
def test_wrdn_round_trip_through_broker(
    file_writer: FileWriterFactory,
    kafka_topic: str,
    kafka_consumer_config: ConsumerConfigFactory,
    tmp_path: Path,
) -> None:
    written = file_writer(kafka_topic, tmp_path / "raw").write_and_announce(3)

    messages = read_messages(kafka_consumer_config(), kafka_topic, 3)

    decoded = [deserialise_wrdn(message.value()) for message in messages]
    assert [(d.file_name, d.job_id) for d in decoded] == [(str(w.path), w.job_id) for w in written]
    assert all(not d.error_encountered and d.service_id == "fake-filewriter" for d in decoded)
    for w in written:
        assert w.job_id == w.entry_uuid
        with h5py.File(w.path, "r") as nexus:
            assert nexus[UUID_PATH][()].decode() == w.entry_uuid


@pytest.mark.integration
def test_announce_to_partitions_and_raw_messages(
    file_writer: FileWriterFactory,
    make_topic: TopicFactory,
    kafka_consumer_config: ConsumerConfigFactory,
) -> None:
    topic = make_topic(partitions=4)
    writer = file_writer(topic)
    files = writer.write(4)
    for partition, written in enumerate(files):
        writer.announce([written], partition=partition, key=b"k")
    writer.produce_raw(b"not a flatbuffer", partition=1)
    writer.produce_raw(None, key=b"tombstone", partition=2)

    messages = read_messages(kafka_consumer_config(), topic, 6)

    by_partition = {p: [m for m in messages if m.partition() == p] for p in range(4)}
    for partition, written in enumerate(files):
        first = by_partition[partition][0]
        assert first.key() == b"k"
        assert deserialise_wrdn(first.value()).job_id == written.job_id
    assert by_partition[1][1].value() == b"not a flatbuffer"
    assert (by_partition[2][1].key(), by_partition[2][1].value()) == (b"tombstone", None)


@pytest.mark.integration
def test_cli_writes_and_announces(
    kafka_broker: HarnessBroker,
    kafka_topic: str,
    kafka_consumer_config: ConsumerConfigFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic]
    assert filewriter.main([*argv, "--data-dir", str(tmp_path), "--count", "2"]) == 0

    printed = capsys.readouterr().out.split()
    messages = read_messages(kafka_consumer_config(), kafka_topic, 2)
    assert [deserialise_wrdn(m.value()).file_name for m in messages] == printed
    assert all(Path(path).is_file() for path in printed)
