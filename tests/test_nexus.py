"""NeXus reader: open errors are classified, odd values read as plain Python, wildcards expand."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from scicat_ingestor.schema.nexus import (
    FileNotReady,
    NexusError,
    NexusReader,
    NexusValueError,
    NotNexus,
    classify_open_error,
    open_nexus,
    stored_nbytes,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def odd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nexus") / "odd.h5"
    with h5py.File(path, "w") as f:
        f["vlen"] = "héllo"
        f["fixed"] = np.bytes_(b"abc")
        f["one_bytes"] = np.array([b"one"], dtype=h5py.string_dtype())
        f["one_fixed"] = np.array([b"K"], dtype="S1")
        f["strings"] = np.array(["a", "b"], dtype=h5py.string_dtype())
        f["number"] = np.float64(1.5)
        f["integer"] = np.int64(31010)
        f["one_int"] = np.array([7])
        f["ints"] = np.arange(4)
        f["matrix"] = np.arange(4).reshape(2, 2)
        f["empty"] = h5py.Empty("f")
        f["bad_utf8"] = np.bytes_(b"\xff\xfe")
        f["big"] = np.zeros(1000)
        f.create_dataset("mm", data=3.0).attrs["units"] = "mm"
        f.create_dataset("kelvin", data=3.0).attrs["units"] = np.bytes_(b"K")
        f.create_dataset("array_unit", data=3.0).attrs["units"] = np.array([b"s"])
        entry = f.create_group("entry")
        for name in ("user_SørenSchmidt", "user_Anna", "superuser", "other"):
            entry.create_group(name)["name"] = name.removeprefix("user_")
        entry["user_plain_dataset"] = "not a group"
    return path


@pytest.fixture
def reader(odd_file: Path) -> Iterator[NexusReader]:
    with open_nexus(odd_file) as r:
        yield r


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("vlen", "héllo"),
        ("fixed", "abc"),
        ("one_bytes", "one"),
        ("one_fixed", "K"),
        ("strings", ["a", "b"]),
        ("number", 1.5),
        ("integer", 31010),
        ("one_int", 7),
        ("ints", [0, 1, 2, 3]),
        ("matrix", [[0, 1], [2, 3]]),
        ("empty", None),
        ("/entry/user_Anna/name", "Anna"),
    ],
)
def test_read_returns_plain_python(reader: NexusReader, path: str, expected: object) -> None:
    value = reader.read(path)
    assert value == expected
    assert type(value) is type(expected)


def test_read_missing_path_names_it(reader: NexusReader) -> None:
    with pytest.raises(NexusValueError, match="/entry/nope: no such dataset") as info:
        reader.read("/entry/nope")
    assert info.value.detail == "/entry/nope: no such dataset"
    assert str(info.value).startswith(str(reader.path))


def test_read_below_a_dataset_is_missing(reader: NexusReader) -> None:
    with pytest.raises(NexusValueError, match="no such dataset"):
        reader.read("vlen/child")


def test_read_group_is_an_error(reader: NexusReader) -> None:
    with pytest.raises(NexusValueError, match="/entry: is a group"):
        reader.read("/entry")


def test_read_invalid_utf8_is_a_clear_error(reader: NexusReader) -> None:
    with pytest.raises(NexusValueError, match="bad_utf8: text is not valid UTF-8"):
        reader.read("bad_utf8")


def test_read_refuses_datasets_over_the_limit(odd_file: Path) -> None:
    with open_nexus(odd_file, max_read_bytes=1024) as r:
        assert r.read("ints") == [0, 1, 2, 3]
        with pytest.raises(NexusValueError, match=r"big: dataset is 8000 bytes.*\(1024\)"):
            r.read("big")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("vlen", "héllo"), ("integer", "31010"), ("number", "1.5"), ("one_int", "7")],
)
def test_read_text_gives_numbers_as_text(reader: NexusReader, path: str, expected: str) -> None:
    assert reader.read_text(path) == expected


def test_read_text_of_an_array_is_a_clear_error(reader: NexusReader) -> None:
    with pytest.raises(NexusValueError, match="holds 2 values"):
        reader.read_text("strings")


def test_read_text_of_an_empty_dataset_is_an_error(reader: NexusReader) -> None:
    with pytest.raises(NexusValueError, match="empty"):
        reader.read_text("empty")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("mm", "mm"), ("kelvin", "K"), ("array_unit", "s"), ("number", None)],
)
def test_units(reader: NexusReader, path: str, expected: str | None) -> None:
    assert reader.units(path) == expected


def test_glob_wildcard_segment_matches_whole_names(reader: NexusReader) -> None:
    # Shell-style: 'user_*' means names starting with 'user_' ('superuser' is not one; upstream's
    # re.search would have matched it).
    assert reader.glob("/entry/user_*/name") == [
        "/entry/user_Anna/name",
        "/entry/user_SørenSchmidt/name",
    ]


def test_glob_star_segment_and_missing_leaf(reader: NexusReader) -> None:
    assert reader.glob("/entry/*/name") == [
        "/entry/other/name",
        "/entry/superuser/name",
        "/entry/user_Anna/name",
        "/entry/user_SørenSchmidt/name",
    ]
    assert reader.glob("entry/user_*") == [
        "/entry/user_Anna",
        "/entry/user_SørenSchmidt",
        "/entry/user_plain_dataset",
    ]


def test_glob_non_ascii_literal_segment(reader: NexusReader) -> None:
    assert reader.glob("/entry/user_Sø*/name") == ["/entry/user_SørenSchmidt/name"]
    assert reader.read("/entry/user_SørenSchmidt/name") == "SørenSchmidt"


def test_glob_matching_nothing_is_empty(reader: NexusReader) -> None:
    assert reader.glob("/entry/nobody_*/name") == []
    assert reader.glob("/missing/*/name") == []
    assert reader.glob("/vlen/*") == []


def test_glob_on_real_ymir_file_includes_non_ascii_user() -> None:
    with open_nexus(DATA / "small-ymir.hdf") as r:
        paths = r.glob("/entry/user_*/name")
        names = [r.read_text(p) for p in paths]
    assert len(names) == 12
    assert "Søren Schmidt" in names


def test_open_missing_file_is_not_ready(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotReady, match="file not found") as info,
        open_nexus(tmp_path / "nope.h5"),
    ):
        pass
    assert str(tmp_path / "nope.h5") in str(info.value)


def test_open_locked_file_is_not_ready(odd_file: Path) -> None:
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is disabled in this environment")
    fd = os.open(odd_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(FileNotReady, match="locked"), open_nexus(odd_file):
            pass
    finally:
        os.close(fd)


def test_open_file_held_by_in_process_writer_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "writing.h5"
    with h5py.File(path, "w") as writer:
        writer["a"] = 1
        with pytest.raises(FileNotReady, match="open for writing"), open_nexus(path):
            pass
        writer["b"] = 2  # the writer's handle is untouched by our close
    with open_nexus(path) as r:
        assert r.read("b") == 2


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello world" * 100, "not an HDF5 file"),
        (b"", "not an HDF5 file"),
        (None, "truncated"),
    ],
)
def test_open_bad_file_is_not_nexus(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.h5"
    if content is None:
        data = (DATA / "small-coda.hdf").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(NotNexus, match=reason), open_nexus(path):
        pass


def test_open_directory_is_not_nexus(tmp_path: Path) -> None:
    with pytest.raises(NotNexus, match="directory"), open_nexus(tmp_path):
        pass


def test_permission_denied_is_permanent() -> None:
    err = classify_open_error(PermissionError(13, "Permission denied"), "/data/x.h5")
    assert isinstance(err, NotNexus)
    assert str(err) == "/data/x.h5: permission denied"


def test_unknown_open_error_is_permanent_and_one_line() -> None:
    err = classify_open_error(OSError("Unable to open (something odd)\nmore"), "/x.h5")
    assert isinstance(err, NotNexus)
    assert str(err) == "/x.h5: cannot open as HDF5: Unable to open (something odd)"


def test_file_is_closed_when_the_body_raises(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(RuntimeError), open_nexus(path):
        raise RuntimeError("boom")
    # Opening for writing fails while any read handle is still open in this process.
    with h5py.File(path, "a") as f:
        f["y"] = 2


def test_all_errors_share_the_base_class() -> None:
    assert issubclass(FileNotReady, NexusError)
    assert issubclass(NotNexus, NexusError)
    assert issubclass(NexusValueError, NexusError)


def test_filesystem_without_locking_is_permanent_with_a_hint() -> None:
    text = "Unable to synchronously open file (unable to lock file, errno = 38, error message = "
    exc = OSError(38, text + "'Function not implemented')")
    err = classify_open_error(exc, "/nfs/x.h5")
    assert isinstance(err, NotNexus)
    assert str(err) == (
        "/nfs/x.h5: cannot lock the file (errno 38); if this filesystem does not support "
        "locking, set HDF5_USE_FILE_LOCKING=FALSE"
    )


# ---- size of variable-length data, found without reading it -------------------------------------


def test_stored_nbytes_counts_variable_length_strings_without_reading(tmp_path: Path) -> None:
    """An itemsize check sees only a pointer: a 1 MB vlen string looked like 16 bytes."""
    path = tmp_path / "vlen.h5"
    with h5py.File(path, "w") as f:
        f["scalar"] = "é" * 500_000  # contiguous, 1,000,000 UTF-8 bytes
        f.create_dataset("chunked", data=["ab", "cde", "f"], dtype=h5py.string_dtype(), chunks=(2,))
        f.create_dataset("empty", shape=(4,), dtype=h5py.string_dtype())
        f["fixed"] = np.bytes_("abcd")
    with h5py.File(path, "r") as f:
        pointer = f["scalar"].dtype.itemsize
        assert stored_nbytes(f["scalar"]) == 1_000_000 + pointer
        assert stored_nbytes(f["chunked"]) == 6 + 3 * pointer
        assert stored_nbytes(f["empty"]) == 4 * pointer
        assert stored_nbytes(f["fixed"]) == 4


def test_vlen_string_over_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f["title"] = "x" * 2_000_000
    with (
        open_nexus(path, max_read_bytes=1_000_000) as reader,
        pytest.raises(NexusError, match="more than max_read_bytes"),
    ):
        reader.read("/title")


@pytest.fixture(scope="module")
def dtype_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset per kind of value the low-level read path takes or hands to h5py."""
    path = tmp_path_factory.mktemp("nexus") / "zoo.h5"
    with h5py.File(path, "w") as f:
        f["i1"] = np.int8(-3)
        f["u8"] = np.array([1, 2, 3], dtype="u8")
        f["big_endian"] = np.array([258, 3], dtype=">i4")
        f["f4"] = np.array([[1.5, 2.5], [3.5, 4.5]], dtype="f4")
        f["fixed_strings"] = np.array([b"ab", b"c"], dtype="S2")
        f["vlen_scalar"] = "Søren"
        f["vlen_array"] = np.array(["x", "yz"], dtype=h5py.string_dtype())
        f["ascii_vlen"] = np.array([b"a"], dtype=h5py.string_dtype("ascii"))
        f["zero_size"] = np.zeros((0,), dtype="i4")
        f["null_space"] = h5py.Empty("i4")
        f["bools"] = np.array([True, False])
        f["enum"] = np.array([0, 1], dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1"))
        f["compound"] = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
        f["vlen_ints"] = np.array(
            [np.array([1, 2]), np.array([3])], dtype=h5py.vlen_dtype(np.dtype("i4"))
        )
        f["complex"] = np.complex128(1 + 2j)
        f.create_dataset("chunked", data=np.arange(10), chunks=(3,), compression="gzip")
        f.create_dataset("with_units", data=2.0).attrs["units"] = "mm"
        f.create_dataset("vlen_units", data=2.0).attrs.create(
            "units", "µs", dtype=h5py.string_dtype()
        )
        f["group/inner"] = 1
        f["soft"] = h5py.SoftLink("/i1")
        f["dangling"] = h5py.SoftLink("/nowhere")
    return path


def _dataset_names(h5: h5py.File) -> list[str]:
    names: list[str] = []
    h5.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def _reference(h5: h5py.File, path: str) -> object:
    """What the reader returned when it went through h5py's high-level ``Dataset``."""
    from scicat_ingestor.schema.nexus import plain

    ds = h5[path]
    return None if ds.shape is None else plain(ds[()])


def test_low_level_reads_equal_high_level_ones(dtype_zoo: Path) -> None:
    with h5py.File(dtype_zoo, "r") as h5:
        names = [*_dataset_names(h5), "soft"]
        expected = {n: _reference(h5, n) for n in names}
        units = {n: h5[n].attrs.get("units") for n in names}
    assert len(names) >= 20
    with open_nexus(dtype_zoo) as reader:
        for name in names:
            got = reader.read("/" + name)
            assert got == expected[name], name
            assert type(got) is type(expected[name]), name
            want_units = units[name]
            assert reader.units("/" + name) == (None if want_units is None else str(want_units))


def test_sample_files_read_the_same_at_low_level() -> None:
    for sample in sorted(DATA.glob("*.hdf")):
        with h5py.File(sample, "r") as h5:
            small = [n for n in _dataset_names(h5) if h5[n].size < 10_000]
            expected = {n: _reference(h5, n) for n in small}
        assert small, sample
        with open_nexus(sample) as reader:
            for name in small:
                assert reader.read("/" + name) == expected[name], (sample, name)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/dangling", "no such dataset"),
        ("/nowhere", "no such dataset"),
        ("/i1/below_a_dataset", "no such dataset"),
        ("/group", "is a group, not a dataset"),
    ],
)
def test_low_level_path_errors(dtype_zoo: Path, path: str, detail: str) -> None:
    with open_nexus(dtype_zoo) as reader, pytest.raises(NexusValueError, match=detail):
        reader.read(path)
