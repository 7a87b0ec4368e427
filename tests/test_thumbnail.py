"""Thumbnails: finding the default plot, bounded reads, rendering, and the validate-schema preview.

Expected pictures live in tests/data/thumbnails/ and are compared by size and coarse content, not
pixel by pixel (fonts and Pillow versions differ). ``REGENERATE_THUMBNAILS=1`` rewrites them;
look at them before committing.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from scicat_ingestor.commands.cli import main
from scicat_ingestor.ingest.thumbnail import (
    REASONS,
    ThumbnailError,
    make_thumbnail,
    plan_read,
    thumbnail_of_file,
)
from scicat_ingestor.schema.loader import load_schema_file
from scicat_ingestor.schema.model import SchemaError
from scicat_ingestor.testing.nexus_plots import PLOT_KINDS, add_big_stack, write_plot_file

EXPECTED = Path(__file__).parent / "data" / "thumbnails"
MAX_POINTS = 1_000_000

# kind → caption, or the reason no picture is made
CASES: dict[str, str] = {
    "line_1d": "counts vs tof",
    "image_2d": "data vs y and x",
    "stack_3d": "data vs y and x (sum of 14 of 40 frames over time)",
    "no_default": "intensity",
    "string_axes": "signal vs sample and q",
    "nan_only": "no_finite_values",
}


def _assert_like(png: bytes, expected: Path) -> None:
    """Same dimensions, similar byte size, similar coarse picture (16 x 12 grey means)."""
    if os.environ.get("REGENERATE_THUMBNAILS"):
        expected.write_bytes(png)
    got, want = Image.open(io.BytesIO(png)), Image.open(expected)
    assert (got.size, got.mode) == (want.size, want.mode)
    assert 0.5 < len(png) / expected.stat().st_size < 2.0
    coarse = [np.asarray(i.convert("L").resize((16, 12)), dtype=float) for i in (got, want)]
    assert np.abs(coarse[0] - coarse[1]).mean() < 12.0


@pytest.mark.parametrize("kind", list(CASES))
def test_generated_files(kind: str, tmp_path: Path) -> None:
    path = write_plot_file(tmp_path / f"{kind}.h5", kind)
    expected = CASES[kind]
    if expected in REASONS:
        with pytest.raises(ThumbnailError) as err:
            thumbnail_of_file(path, MAX_POINTS)
        assert err.value.reason == expected
        return
    thumb = thumbnail_of_file(path, MAX_POINTS)
    assert thumb.caption == expected
    assert thumb.png.startswith(b"\x89PNG")
    assert thumb.data_uri().startswith("data:image/png;base64,iVBOR")
    assert len(thumb.png) < 64 * 1024  # "a small image": SciCat stores it in the document
    _assert_like(thumb.png, EXPECTED / f"{kind}.png")


@pytest.mark.parametrize("name", ["small-coda.hdf", "small-ymir.hdf"])
def test_ess_sample_files_have_no_default_plot(name: str, data_dir: Path) -> None:
    # coda has no NXdata; ymir's /entry/data has no @signal: a clear reason, no picture
    with pytest.raises(ThumbnailError, match="no default plot") as err:
        thumbnail_of_file(data_dir / name, MAX_POINTS)
    assert err.value.reason == "no_plot"


def test_ess_sample_file_with_a_plot_added(data_dir: Path, tmp_path: Path) -> None:
    path = write_plot_file(tmp_path / "coda.hdf", "image_2d", template=data_dir / "small-coda.hdf")
    thumb = thumbnail_of_file(path, MAX_POINTS)
    assert thumb.caption == "data vs y and x"
    _assert_like(thumb.png, EXPECTED / "small-coda-image_2d.png")


def test_default_chain_wins_over_the_first_nxdata(tmp_path: Path) -> None:
    path = write_plot_file(tmp_path / "f.h5", "no_default")  # a monitor NXdata comes first
    with h5py.File(path, "a") as h5:
        PLOT_KINDS["line_1d"](h5)  # sets @default → /entry/spectrum
    assert thumbnail_of_file(path, MAX_POINTS).caption == "counts vs tof"


def test_broken_default_chain_falls_back(tmp_path: Path) -> None:
    path = write_plot_file(tmp_path / "f.h5", "line_1d")
    with h5py.File(path, "a") as h5:
        h5["entry"].attrs["default"] = "no_such_group"
    assert thumbnail_of_file(path, MAX_POINTS).caption == "counts vs tof"


def test_schema_path_names_the_plot(tmp_path: Path) -> None:
    path = write_plot_file(tmp_path / "f.h5", "line_1d")
    with h5py.File(path, "a") as h5:
        PLOT_KINDS["string_axes"](h5)  # @default now points at /entry/scan
    assert thumbnail_of_file(path, MAX_POINTS).caption == "signal vs sample and q"
    assert thumbnail_of_file(path, MAX_POINTS, "/entry/spectrum").caption == "counts vs tof"
    dataset = thumbnail_of_file(path, MAX_POINTS, "/entry/spectrum/counts")
    assert dataset.caption == "counts vs tof"  # the NXdata's signal: its axes are used
    with pytest.raises(ThumbnailError, match="/entry/nothing: not in the file"):
        thumbnail_of_file(path, MAX_POINTS, "/entry/nothing")


def test_soft_and_external_links_are_not_followed_in_the_search(tmp_path: Path) -> None:
    target = write_plot_file(tmp_path / "other.h5", "line_1d")
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as h5:
        h5["linked"] = h5py.ExternalLink(str(target), "/entry")
    with pytest.raises(ThumbnailError) as err:
        thumbnail_of_file(path, MAX_POINTS)
    assert err.value.reason == "no_plot"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (np.array([b"a", b"b"]), "unsupported"),
        (np.float64(3.0), "unsupported"),
        (np.zeros((0, 4)), "unsupported"),
        (np.full((4, 4), np.inf), "no_finite_values"),
    ],
)
def test_odd_signals_give_a_reason(data: Any, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("data")
        group.attrs.update(NX_class="NXdata", signal="s")
        group.create_dataset("s", data=data)
    with pytest.raises(ThumbnailError) as err:
        thumbnail_of_file(path, MAX_POINTS)
    assert err.value.reason == reason


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ThumbnailError) as err:
        thumbnail_of_file(tmp_path / "junk.h5", MAX_POINTS)
    assert err.value.reason == "unreadable"


# ---- bounded reads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((1_000_000_000,), (1_000_000 // 8,)),
        ((1_000_000_000,), None),
        ((32768, 16384), (64, 64)),
        ((32768, 16384), None),
        ((1024, 512, 512), (1, 512, 512)),
        ((100, 100, 2000, 2000), (1, 1, 250, 250)),
    ],
)
def test_read_plan_stays_within_max_points(
    shape: tuple[int, ...], chunks: tuple[int, ...] | None, tmp_path: Path
) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as h5:  # declared, never written: no disk used
        ds = h5.create_dataset("d", shape=shape, dtype="f8", chunks=chunks)
        steps, cost = plan_read(ds, [256] * len(shape), MAX_POINTS)
        assert cost <= MAX_POINTS
        samples = math.prod(math.ceil(n / s) for n, s in zip(shape, steps, strict=True))
        assert 1 < samples <= cost


def test_read_plan_thins_frames_not_the_image(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as h5:  # one 512 x 512 chunk per frame
        ds = h5.create_dataset("d", shape=(1024, 512, 512), dtype="f8", chunks=(1, 512, 512))
        steps, cost = plan_read(ds, [16, 256, 256], MAX_POINTS)
    assert steps == [342, 2, 2]  # 3 frames (3 chunks = 786,432 values), each at 256 x 256
    assert cost == 3 * 512 * 512


def test_read_plan_thins_image_axes_alike(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        ds = h5.create_dataset("d", shape=(32768, 16384), dtype="f8", chunks=(64, 64))
        steps, _ = plan_read(ds, [256, 256], MAX_POINTS)
    rows, cols = (math.ceil(n / s) for n, s in zip((32768, 16384), steps, strict=True))
    assert (rows, cols) == (15, 15)  # one sample per chunk, 15 x 15 x 64 x 64 = 921,600 values


def test_one_chunk_larger_than_max_points_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        ds = h5.create_dataset("d", shape=(4096, 4096), dtype="f4", chunks=(2048, 2048))
        with pytest.raises(
            ThumbnailError, match=r"more than ingestion\.thumbnail\.max_points"
        ) as e:
            plan_read(ds, [256, 256], MAX_POINTS)
        assert e.value.reason == "too_large"


class _ReadLog(io.FileIO):
    """A file whose reads are recorded as (offset, length): what HDF5 fetched from disk."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "r")
        self.reads: list[tuple[int, int]] = []

    def readinto(self, buffer: Any) -> int:
        offset = self.tell()
        n = super().readinto(buffer) or 0
        self.reads.append((offset, n))
        return n

    def read(self, size: int = -1) -> bytes:
        offset = self.tell()
        data = super().read(size)
        self.reads.append((offset, len(data)))
        return data


@pytest.mark.integration
def test_a_2_gib_detector_stack_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as h5:
        add_big_stack(h5)
    with h5py.File(path, "r") as h5:
        ds = h5["/entry/detector/data"]
        assert ds.size * ds.dtype.itemsize == 2 * 1024**3
        chunk_values = math.prod(ds.chunks)
        ranges = [
            (info.byte_offset, info.byte_offset + info.size)
            for info in (ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks()))
        ]
    assert len(ranges) == 1024  # every chunk is stored
    with _ReadLog(path) as raw, h5py.File(raw, "r") as h5:
        started = time.process_time()
        thumb = make_thumbnail(h5, MAX_POINTS)
        cpu = time.process_time() - started
        reads = raw.reads
    touched = {
        r for r in ranges if any(o < r[1] and o + n > r[0] for o, n in reads)
    }  # chunks HDF5 fetched (and decompressed)
    assert 1 <= len(touched) * chunk_values <= MAX_POINTS
    assert thumb.values_read == len(touched) * chunk_values
    assert sum(n for _, n in reads) < path.stat().st_size / 50
    assert "sum of 3 of 1024 frames" in thumb.caption
    colours = Image.open(io.BytesIO(thumb.png)).convert("RGB").getcolors(4096)
    assert colours is not None and len(colours) > 50  # the spot is drawn, not a blank frame
    assert cpu < 2.0  # a few tens of ms on the build machine; generous for a loaded one


# ---- schema key and the validate-schema preview ---------------------------------------------


def test_schema_thumbnail_key(tmp_path: Path, data_dir: Path) -> None:
    source = yaml.safe_load((data_dir / "schemas" / "small-coda.imsc.yml").read_text())
    assert load_schema_file(data_dir / "schemas" / "small-coda.imsc.yml")[0].thumbnail == ""
    path = tmp_path / "a.imsc.yml"
    path.write_text(yaml.safe_dump({**source, "thumbnail": "/entry/spectrum"}))
    assert load_schema_file(path)[0].thumbnail == "/entry/spectrum"
    path.write_text(yaml.safe_dump({**source, "thumbnail": "entry/spectrum"}))
    with pytest.raises(SchemaError, match="thumbnail: must be an absolute HDF5 path"):
        load_schema_file(path)


def _config(tmp_path: Path, schemas: Path) -> Path:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"ingestion": {"schemas_directory": str(schemas)}}))
    return config


def test_validate_schema_writes_the_thumbnail(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    source = yaml.safe_load((data_dir / "schemas" / "small-coda.imsc.yml").read_text())
    (schemas / "coda.imsc.yml").write_text(
        yaml.safe_dump({**source, "thumbnail": "/entry/spectrum"}, sort_keys=False)
    )
    nexus = write_plot_file(
        tmp_path / "small-coda.hdf", "image_2d", template=data_dir / "small-coda.hdf"
    )
    with h5py.File(nexus, "a") as h5:
        PLOT_KINDS["line_1d"](h5)  # @default → spectrum too; the schema names it anyway
        h5["entry"].attrs["default"] = "detector_image"
    out = tmp_path / "out.png"
    args = ["validate-schema", "-c", str(_config(tmp_path, schemas))]
    assert main([*args, "--nexus-file", str(nexus), "--thumbnail", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Thumbnail: {out} (" in printed
    assert printed.rstrip().endswith("counts vs tof")  # the schema's path, not the default
    assert Image.open(out).size == (400, 300)

    shutil.copy(data_dir / "small-coda.hdf", nexus)
    assert main([*args, "--nexus-file", str(nexus), "--thumbnail", str(out)]) == 1
    assert "Thumbnail: none (no_plot)" in capsys.readouterr().out
    assert main([*args, "--thumbnail", str(out)]) == 1
    assert "--thumbnail needs --nexus-file" in capsys.readouterr().out


def test_scale_zero_is_the_bottom_of_a_log_scale_and_nan_is_missing() -> None:
    from scicat_ingestor.ingest.thumbnail import _scaled

    unit, low, high, log = _scaled(np.array([0.0, 1.0, 1e4, np.nan, -0.0]))
    assert log and (low, high) == (0.0, 4.0)
    assert unit[0] == 0.0 and unit[4] == 0.0 and unit[2] == 1.0
    assert np.isnan(unit[3])
    unit, _, _, log = _scaled(np.array([-1.0, 0.0, 1e4]))  # negative: linear
    assert not log and unit.tolist() == [0.0, pytest.approx(1 / 10001), 1.0]
    _, _, _, log = _scaled(np.array([1.0, 999.0]))  # under three decades: linear
    assert not log
