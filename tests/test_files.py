"""files.py: checksums, stats, path safety, side files, file-list paths."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scicat_ingestor.config.model import FileHandlingOptions
from scicat_ingestor.ingest.files import (
    FileEntry,
    PathRefused,
    SideFileCollision,
    checksum,
    ingestor_directory,
    relative_to_source_folder,
    require_regular_file,
    resolve_in_roots,
    stat_entry,
    write_hash_file,
    write_message_file,
)
from scicat_ingestor.ops.metrics import REGISTRY


def _bytes_hashed() -> float:
    return REGISTRY.get_sample_value("scicat_ingestor_bytes_hashed_total") or 0.0


def test_checksum_matches_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    data = os.urandom(3 * 65536 + 17)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    before = _bytes_hashed()
    assert checksum(path, chunk_bytes=65536) == hashlib.blake2b(data).hexdigest()
    assert len(checksum(path)) == 128
    assert _bytes_hashed() - before == 2 * len(data)


def test_checksum_of_empty_file_and_other_algorithms(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert checksum(path) == hashlib.blake2b(b"").hexdigest()
    assert checksum(path, "sha256") == hashlib.sha256(b"").hexdigest()


def test_checksum_rejects_unknown_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported file_hash_algorithm 'crc99'"):
        checksum(path, "crc99")


def test_stat_entry_uses_mtime_not_ctime(tmp_path: Path) -> None:
    path = tmp_path / "f.hdf"
    path.write_bytes(b"12345")
    os.utime(path, (1_700_000_000, 1_700_000_000))  # ctime is now; upstream reported it
    entry = stat_entry(path, compute_stats=True, chk="abc")
    st = path.stat()
    assert entry == FileEntry(
        path=path.as_posix(),
        size=5,
        time="2023-11-14T22:13:20.000Z",
        chk="abc",
        uid=str(st.st_uid),
        gid=str(st.st_gid),
        perm=oct(st.st_mode),
    )
    assert entry.perm is not None and entry.perm.startswith("0o100")


def test_stat_entry_without_stats_keeps_size_and_uses_now(tmp_path: Path) -> None:
    path = tmp_path / "f.hdf"
    path.write_bytes(b"12345")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    entry = stat_entry(path, compute_stats=False, chk=None)
    assert (entry.size, entry.uid, entry.gid, entry.perm, entry.chk) == (5, None, None, None, None)
    assert entry.time.startswith(str(datetime.now(UTC).year))
    assert entry.to_dto() == {"path": path.as_posix(), "size": 5, "time": entry.time}


def test_dto_omits_nulls_but_keeps_values() -> None:
    entry = FileEntry("a/b.h5", 3, "2024-01-01T00:00:00.000Z", None, "0", "0", "0o100644")
    assert entry.to_dto() == {
        "path": "a/b.h5",
        "size": 3,
        "time": "2024-01-01T00:00:00.000Z",
        "uid": "0",
        "gid": "0",
        "perm": "0o100644",
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    (data / "raw" / "f.hdf").write_bytes(b"x")
    (tmp_path / "secret.hdf").write_bytes(b"x")
    return data


def test_path_inside_root_is_resolved(root: Path) -> None:
    assert resolve_in_roots(str(root / "raw" / "f.hdf"), [str(root)]) == root / "raw" / "f.hdf"
    assert resolve_in_roots(str(root / "raw" / "f.hdf"), ["/elsewhere", str(root)]).exists()


def test_missing_file_inside_root_is_not_refused(root: Path) -> None:
    """Whether it exists is the opener's question (a transient failure), not a safety one."""
    assert resolve_in_roots(str(root / "later.hdf"), [str(root)]) == root / "later.hdf"


def test_relative_path_is_refused(root: Path) -> None:
    with pytest.raises(PathRefused, match=r"raw/f\.hdf: not an absolute path"):
        resolve_in_roots("raw/f.hdf", [str(root)])
    with pytest.raises(PathRefused, match="not an absolute path"):
        resolve_in_roots("raw/f.hdf", [])


def test_no_roots_means_no_restriction(root: Path) -> None:
    assert resolve_in_roots(str(root.parent / "secret.hdf"), []) == root.parent / "secret.hdf"


def test_path_outside_roots_is_refused(root: Path) -> None:
    with pytest.raises(PathRefused, match=r"secret.hdf: outside the data roots; data roots: "):
        resolve_in_roots(str(root.parent / "secret.hdf"), [str(root)])


def test_dotdot_traversal_is_refused(root: Path) -> None:
    sneaky = f"{root}/raw/../../secret.hdf"
    with pytest.raises(PathRefused, match=r"'\.\.' leads outside the data roots"):
        resolve_in_roots(sneaky, [str(root)])
    # '..' that stays inside the root is harmless
    assert resolve_in_roots(f"{root}/raw/../raw/f.hdf", [str(root)]) == root / "raw" / "f.hdf"


def test_symlink_escaping_the_root_is_refused(root: Path) -> None:
    link = root / "raw" / "link.hdf"
    link.symlink_to(root.parent / "secret.hdf")
    with pytest.raises(PathRefused, match="a symlink leads outside the data roots"):
        resolve_in_roots(str(link), [str(root)])


def test_symlink_loop_is_refused(root: Path) -> None:
    """Python 3.11's Path.resolve raises RuntimeError on a loop; it must not escape."""
    (root / "raw" / "a.hdf").symlink_to(root / "raw" / "b.hdf")
    (root / "raw" / "b.hdf").symlink_to(root / "raw" / "a.hdf")
    with pytest.raises(PathRefused, match=r"a\.hdf: cannot resolve .*[Ss]ymlink loop"):
        resolve_in_roots(str(root / "raw" / "a.hdf"), [str(root)])


def test_only_regular_files_are_opened(root: Path) -> None:
    """Opening a FIFO blocks until a writer appears (and freezes the whole process)."""
    fifo = root / "raw" / "pipe.hdf"
    os.mkfifo(fifo)
    with pytest.raises(PathRefused, match=r"pipe\.hdf: not a regular file \(a FIFO\)"):
        require_regular_file(fifo)
    with pytest.raises(PathRefused, match=r"raw: not a regular file \(a directory\)"):
        require_regular_file(root / "raw")
    require_regular_file(root / "raw" / "f.hdf")
    require_regular_file(root / "raw" / "not-yet.hdf")  # missing: the opener's (transient) case


def test_root_that_is_a_symlink_still_works(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert resolve_in_roots(str(alias / "raw" / "f.hdf"), [str(alias)]) == root / "raw" / "f.hdf"
    assert resolve_in_roots(str(root / "raw" / "f.hdf"), [str(alias)]) == root / "raw" / "f.hdf"


def test_root_prefix_is_not_enough(tmp_path: Path) -> None:
    """/data2/x is not inside /data although the string starts with it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data2").mkdir()
    with pytest.raises(PathRefused, match="outside the data roots"):
        resolve_in_roots(str(tmp_path / "data2" / "f.hdf"), [str(tmp_path / "data")])


def test_ingestor_directory_relative_is_created(tmp_path: Path) -> None:
    """Upstream never created it, so writing the hash file failed."""
    nexus = tmp_path / "a" / "raw" / "f.hdf"
    directory = ingestor_directory(FileHandlingOptions(), nexus)
    assert directory == tmp_path / "a" / "ingestor"
    assert directory.is_dir()


def test_ingestor_directory_absolute(tmp_path: Path) -> None:
    fh = FileHandlingOptions(ingestor_files_directory=str(tmp_path / "side" / "car"))
    assert ingestor_directory(fh, Path("/x/y.hdf")) == tmp_path / "side" / "car"
    assert (tmp_path / "side" / "car").is_dir()


def test_side_files(tmp_path: Path) -> None:
    nexus = Path("/data/raw/run_1.hdf")
    hash_file = write_hash_file(tmp_path, nexus, "ab" * 64, "b2b")
    assert hash_file == tmp_path / "run_1.b2b"
    assert hash_file.read_text() == "ab" * 64
    message = {"job_id": "j1", "file_name": "/data/raw/run_1.hdf", "metadata": None}
    message_file = write_message_file(tmp_path, nexus, message, "message.json")
    assert message_file == tmp_path / "run_1.message.json"
    assert json.loads(message_file.read_text()) == message  # an object, not upstream's array
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".run_1.owner", "run_1.b2b", "run_1.message.json"]
    assert (tmp_path / ".run_1.owner").read_text() == "/data/raw/run_1.hdf\n"


def test_sibling_folders_do_not_share_side_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """a/run.hdf and b/run.hdf with ../ingestor: upstream wrote both hashes to ingestor/run.b2b."""
    fh = FileHandlingOptions()
    first, second = tmp_path / "a" / "run.hdf", tmp_path / "b" / "run.hdf"
    side = {}
    for nexus, digest in ((first, "aa" * 64), (second, "bb" * 64)):
        side[nexus] = write_hash_file(ingestor_directory(fh, nexus), nexus, digest, "b2b")
    assert side[first] == tmp_path / "ingestor" / "run.b2b"  # the ESS layout kept for the first
    assert side[second].parent == tmp_path / "ingestor"
    assert side[second].name.startswith("run.b-") and side[second].suffix == ".b2b"
    assert side[first].read_text() == "aa" * 64
    assert side[second].read_text() == "bb" * 64
    # deterministic: re-ingesting either (any order) gives the same names, both hashes stay right
    for nexus, digest in ((second, "cc" * 64), (first, "dd" * 64)):
        again = write_hash_file(ingestor_directory(fh, nexus), nexus, digest, "b2b")
        assert again == side[nexus]
        assert again.read_text() == digest
    message = write_message_file(tmp_path / "ingestor", second, {"job_id": "j"}, "message.json")
    assert message.name == side[second].name.replace(".b2b", ".message.json")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (
        f"{second}: side file name run is taken by {first}; using {side[second].stem}"
    )


def test_side_files_written_before_owner_files_are_taken_over(tmp_path: Path) -> None:
    """A run.b2b from upstream (no owner file) belongs to whoever writes it next, as before."""
    (tmp_path / "run.b2b").write_text("old")
    assert write_hash_file(tmp_path, Path("/d/raw/run.hdf"), "ab", "b2b") == tmp_path / "run.b2b"


def test_side_file_names_all_taken_refuses(tmp_path: Path) -> None:
    nexus = Path("/d/raw/run.hdf")
    other = write_hash_file(tmp_path, Path("/d/x/run.hdf"), "ab", "b2b")
    write_hash_file(tmp_path, nexus, "cd", "b2b")
    second_name = next(p.name for p in tmp_path.glob("run.raw-*.b2b"))
    (tmp_path / f".{second_name.removesuffix('.b2b')}.owner").write_text("/elsewhere.hdf\n")
    with pytest.raises(SideFileCollision, match="both belong to other data files"):
        write_hash_file(tmp_path, nexus, "cd", "b2b")
    assert other.read_text() == "ab"


def _entry(path: str) -> FileEntry:
    return FileEntry(path, 1, "2024-01-01T00:00:00.000Z", None, None, None, None)


def test_relative_paths_are_made_relative_exactly_once() -> None:
    """Upstream relativised twice and crashed on the already relative paths."""
    entries = [_entry("/data/coda/raw/f.hdf"), _entry("/data/coda/ingestor/f.b2b")]
    result = relative_to_source_folder(entries, "/data/coda/", "relative")
    assert [e.path for e in result] == ["raw/f.hdf", "ingestor/f.b2b"]


def test_absolute_paths_are_left_alone() -> None:
    entries = [_entry("/data/coda/raw/f.hdf")]
    assert relative_to_source_folder(entries, "/elsewhere", "absolute") == entries


def test_file_outside_source_folder_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"/other/f.hdf is not inside sourceFolder /data/coda"):
        relative_to_source_folder([_entry("/other/f.hdf")], "/data/coda", "relative")
