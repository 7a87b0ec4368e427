"""NeXus files with (and without) a default plot, for thumbnail tests and the benchmark.

Each ``add_*`` writes one shape of plot data into an open ``h5py.File`` (e.g. a copy of an ESS
sample file, whose metadata then still ingests); ``PLOT_KINDS`` maps a name to each. They mimic
what other facilities' files look like: the modern ``@default``/``@signal``/``@axes`` chain,
files without ``@default``, old-style ``@axes="x:y"`` strings, string-valued axes, NaN.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

RNG_SEED = 20


def _nxdata(parent: h5py.Group, name: str, signal: str, axes: list[str] | str | None) -> h5py.Group:
    group = parent.require_group(name)
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    if axes is not None:
        group.attrs["axes"] = axes
    return group


def _entry(h5: h5py.File, default: str | None) -> h5py.Group:
    entry = h5.require_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    if default is not None:
        h5.attrs["default"] = "entry"
        entry.attrs["default"] = default
    return entry


def add_line_1d(h5: h5py.File) -> None:
    """A time-of-flight spectrum spanning five decades: log y, axis with units."""
    group = _nxdata(_entry(h5, "spectrum"), "spectrum", "counts", ["tof"])
    tof = np.linspace(1000.0, 71000.0, 5000)
    counts = 1e5 * np.exp(-(((tof - 20000.0) / 4000.0) ** 2)) + 3.0
    counts += np.random.default_rng(RNG_SEED).poisson(2.0, tof.size)
    group.create_dataset("counts", data=counts).attrs["units"] = "counts"
    group.create_dataset("tof", data=tof).attrs["units"] = "us"


def add_image_2d(h5: h5py.File) -> None:
    """A detector image with a bright peak on a flat background, chunked and compressed."""
    group = _nxdata(_entry(h5, "detector_image"), "detector_image", "data", ["y", "x"])
    y, x = np.mgrid[0:300, 0:400]
    image = 1e4 * np.exp(-(((x - 250.0) / 30.0) ** 2 + ((y - 120.0) / 50.0) ** 2)) + 1.0
    group.create_dataset("data", data=image, chunks=(100, 100), compression="gzip")
    group.create_dataset("y", data=np.linspace(-15.0, 15.0, 300)).attrs["units"] = "mm"
    group.create_dataset("x", data=np.linspace(-20.0, 20.0, 401)).attrs["units"] = "mm"  # edges


def add_stack_3d(h5: h5py.File) -> None:
    """40 frames of counts from a moving spot (frames, y, x): drawn as a sum of sampled frames."""
    group = _nxdata(_entry(h5, "frames"), "frames", "data", ["time", "y", "x"])
    t = np.arange(40)[:, None, None]
    y, x = np.mgrid[0:64, 0:80][:, None]
    spot = 50.0 * np.exp(-(((x - 10.0 - 1.5 * t) / 4.0) ** 2 + ((y - 32.0) / 6.0) ** 2))
    stack = np.random.default_rng(RNG_SEED).poisson(spot + 0.3)
    group.create_dataset("data", data=stack.astype(np.int32), chunks=(1, 64, 80))
    group.create_dataset("time", data=np.arange(40) * 0.1).attrs["units"] = "s"
    group.create_dataset("y", data=np.arange(64))
    group.create_dataset("x", data=np.arange(80))


def add_no_default(h5: h5py.File) -> None:
    """No ``@default`` anywhere; the plot is the first NXdata with a ``@signal``, nested deeper."""
    entry = _entry(h5, None)
    instrument = entry.require_group("instrument")
    instrument.attrs["NX_class"] = "NXinstrument"
    _nxdata(instrument, "empty_data", "missing", None)  # names a signal that is not there
    group = _nxdata(instrument, "monitor", "intensity", ".")
    group.create_dataset("intensity", data=np.sin(np.linspace(0.0, 12.0, 400)) + 1.5)


def add_string_axes(h5: h5py.File) -> None:
    """Old-style ``@axes="sample:q"`` string; the first axis holds text labels; values < 0."""
    group = _nxdata(_entry(h5, "scan"), "scan", "signal", "sample:q")
    q = np.linspace(0.01, 0.5, 120)
    data = np.sin(q[None, :] * 20.0 + np.arange(6)[:, None])
    group.create_dataset("signal", data=data).attrs["units"] = "a.u."
    group.create_dataset("sample", data=[f"sample-{i}".encode() for i in range(6)])
    group.create_dataset("q", data=q).attrs["units"] = "1/angstrom"


def add_nan_only(h5: h5py.File) -> None:
    """A default plot whose signal is all NaN: no picture, a warning."""
    group = _nxdata(_entry(h5, "data"), "data", "data", ["x"])
    group.create_dataset("data", data=np.full(100, np.nan))
    group.create_dataset("x", data=np.arange(100.0))


def add_big_stack(h5: h5py.File, frames: int = 1024, side: int = 512) -> None:
    """A 2 GiB float64 stack (``frames`` x ``side`` x ``side``), one gzip chunk per frame.

    Every chunk is written (the same compressed bytes, so the file stays a few MB): reading the
    whole dataset would decompress 2 GiB. Tests count which chunks were read.
    """
    group = _nxdata(_entry(h5, "detector"), "detector", "data", ["frame", "y", "x"])
    ds = group.create_dataset(
        "data",
        shape=(frames, side, side),
        dtype=np.float64,
        chunks=(1, side, side),
        compression="gzip",
    )
    y, x = np.mgrid[0:side, 0:side]
    spot = np.exp(-(((x - side / 2) / (side / 16)) ** 2 + ((y - side / 3) / (side / 12)) ** 2))
    frame = np.round(1000.0 * spot)  # counts: compresses to ~30 KB, so the file is ~30 MB
    payload = zlib.compress(np.ascontiguousarray(frame).tobytes(), 9)
    for i in range(frames):
        ds.id.write_direct_chunk((i, 0, 0), payload)
    group.create_dataset("frame", data=np.arange(frames))


PLOT_KINDS: dict[str, Callable[[h5py.File], None]] = {
    "line_1d": add_line_1d,
    "image_2d": add_image_2d,
    "stack_3d": add_stack_3d,
    "no_default": add_no_default,
    "string_axes": add_string_axes,
    "nan_only": add_nan_only,
}


def write_plot_file(dest: Path, kind: str, template: Path | None = None) -> Path:
    """Write ``dest`` (a copy of ``template`` if given) with the ``kind`` plot added."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if template is not None:
        dest.write_bytes(template.read_bytes())
    with h5py.File(dest, "a" if template is not None else "w") as h5:
        PLOT_KINDS[kind](h5)
    return dest
