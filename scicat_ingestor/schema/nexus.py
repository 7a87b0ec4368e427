"""Open a NeXus/HDF5 file read-only and read small values from it safely.

One open attempt only: whether and when to retry is the caller's decision, made from the error type
(``FileNotReady`` may succeed later, ``NotNexus`` never will). Values come back as plain Python
objects (``str``, ``int``, ``float``, ``list``) so the schema engine never sees numpy or bytes.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import logging
import math
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from scicat_ingestor.ops.turns import TURNS

logger = logging.getLogger("scicat_ingestor.nexus")

DEFAULT_MAX_READ_BYTES = 16 * 1024 * 1024


class NexusError(Exception):
    """A problem with one NeXus file; ``str()`` names the file, ``detail`` is the reason alone."""

    def __init__(self, file: Path | str, detail: str) -> None:
        super().__init__(f"{file}: {detail}")
        self.file = str(file)
        self.detail = detail


class FileNotReady(NexusError):  # noqa: N818 - name agreed with the other modules
    """The file is missing or still locked by its writer: opening it may succeed later."""


class NotNexus(NexusError):  # noqa: N818 - name agreed with the other modules
    """The file exists but is not readable HDF5 (wrong format, truncated, no permission)."""


class NexusValueError(NexusError):
    """One value could not be read (missing path, a group, too large, undecodable text)."""


def classify_open_error(exc: OSError, path: Path | str) -> NexusError:
    """Map an ``h5py.File`` open failure to a transient or permanent error."""
    text = str(exc)
    if isinstance(exc, BlockingIOError):
        return FileNotReady(path, "locked by another process (still being written?)")
    if "unable to lock" in text:
        # Not "someone holds the lock" (that is EAGAIN → BlockingIOError): the filesystem
        # cannot lock at all (ENOSYS/ENOLCK, e.g. some NFS mounts). Retrying will not help.
        return NotNexus(
            path,
            f"cannot lock the file (errno {exc.errno}); if this filesystem does not support "
            "locking, set HDF5_USE_FILE_LOCKING=FALSE",
        )
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return FileNotReady(path, "file not found")
    if isinstance(exc, PermissionError):
        return NotNexus(path, "permission denied")
    if isinstance(exc, IsADirectoryError):
        return NotNexus(path, "is a directory, not a file")
    if "truncated file" in text:
        return NotNexus(path, "truncated HDF5 file")
    if "file signature not found" in text:
        return NotNexus(path, "not an HDF5 file (file signature not found)")
    return NotNexus(path, f"cannot open as HDF5: {_first_line(text)}")


@contextmanager
def open_nexus(path: Path, max_read_bytes: int = DEFAULT_MAX_READ_BYTES) -> Iterator[NexusReader]:
    """Open ``path`` read-only once and yield a reader; the file is closed on every exit path.

    The thread holds its turn (``turns.TURNS``) while the file is open: h5py runs every call
    under one process-wide lock, so workers reading file by file keep it uncontended.
    """
    with TURNS.hold():
        try:
            h5 = h5py.File(path, "r")
        except OSError as exc:
            raise classify_open_error(exc, path) from exc
        try:
            # HDF5 hands back the existing handle when this process already has the file open
            # for writing (e.g. an in-process writer): that file is not finished yet.
            if h5.mode != "r":
                raise FileNotReady(path, "still open for writing in this process")
            yield NexusReader(h5, Path(path), max_read_bytes)
        finally:
            h5.close()


class NexusReader:
    """Read small values by HDF5 path; every failure is a ``NexusValueError`` with the reason."""

    def __init__(
        self, h5: h5py.File, path: Path, max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    ) -> None:
        self._h5 = h5
        self.path = path
        self.max_read_bytes = max_read_bytes
        self._objects: dict[str, Any] = {}
        self._ids: dict[str, h5py.h5d.DatasetID] = {}
        # Variable-length data lives uncompressed in the file's global heap, so in a file no larger
        # than the cap no value can exceed it: only bigger files need the (costlier) exact size.
        self._vlen_needs_check = _file_size(h5, path) > max_read_bytes

    def _error(self, detail: str) -> NexusValueError:
        return NexusValueError(self.path, detail)

    def _get(self, path: str) -> Any:
        """``h5.get`` (high-level objects, for ``glob``) with a per-file cache."""
        try:
            return self._objects[path]
        except KeyError:
            pass
        try:
            obj = self._h5.get(path)
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise self._error(f"{path}: cannot access: {_first_line(str(exc))}") from exc
        self._objects[path] = obj
        return obj

    def _dataset(self, path: str) -> h5py.h5d.DatasetID:
        """The dataset's low-level id, opened once per file (``read`` then ``units`` share it).

        Building h5py's high-level ``Dataset`` (and its ``File``) for every path cost more than
        reading the value; the low-level id answers the same questions for a fraction of it.
        """
        try:
            return self._ids[path]
        except KeyError:
            pass
        try:
            oid = h5py.h5o.open(self._h5.id, path.encode("utf-8"))
        except KeyError:  # missing, a broken link, or a dataset used as a group on the way
            raise self._error(f"{path}: no such dataset") from None
        except (ValueError, TypeError, OSError) as exc:
            raise self._error(f"{path}: cannot access: {_first_line(str(exc))}") from exc
        if not isinstance(oid, h5py.h5d.DatasetID):
            raise self._error(f"{path}: is a group, not a dataset")
        self._ids[path] = oid
        return oid

    def read(self, path: str) -> Any:
        """The value at ``path`` as plain Python: one element → scalar, several → list."""
        oid = self._dataset(path)
        space = oid.get_space()
        if space.get_simple_extent_type() == h5py.h5s.NULL:
            return None
        shape = space.shape
        dtype = oid.dtype
        fast = _simple_dtype(dtype) and all(shape)
        if self._vlen_needs_check or not fast:
            ds = h5py.Dataset(oid)
            nbytes = stored_nbytes(ds) if self._vlen_needs_check else ds.size * dtype.itemsize
        else:
            ds = None
            nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.max_read_bytes:
            raise self._error(
                f"{path}: dataset is {nbytes} bytes, more than max_read_bytes "
                f"({self.max_read_bytes}); refusing to read it"
            )
        try:
            if fast:  # what ``Dataset.__getitem__(())`` does for these types, minus its checks
                raw: Any = np.empty(shape, dtype=dtype)
                oid.read(h5py.h5s.ALL, h5py.h5s.ALL, raw)
            else:
                raw = (ds or h5py.Dataset(oid))[()]
        except (OSError, ValueError, TypeError) as exc:
            raise self._error(f"{path}: read failed: {_first_line(str(exc))}") from exc
        try:
            return plain(raw)
        except UnicodeDecodeError as exc:
            raise self._error(f"{path}: text is not valid UTF-8 ({exc.reason})") from exc

    def read_text(self, path: str) -> str:
        """The value at ``path`` as text: strings as they are, numbers as their decimal text."""
        value = self.read(path)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            raise self._error(
                f"{path}: holds {len(value)} values; a 'string' needs exactly one "
                "(use string[] or list)"
            )
        if value is None:
            raise self._error(f"{path}: dataset is empty")
        return str(value)

    def units(self, path: str) -> str | None:
        """The dataset's ``units`` attribute as text, or None when it has none."""
        oid = self._dataset(path)
        try:
            # most datasets have no units: asking HDF5 is cheap, h5py's attribute manager is not
            raw = h5py.Dataset(oid).attrs.get("units") if h5py.h5a.exists(oid, b"units") else None
        except (OSError, KeyError) as exc:
            raise self._error(f"{path}: cannot read 'units': {_first_line(str(exc))}") from exc
        if raw is None:
            return None
        try:
            value = plain(raw)
        except UnicodeDecodeError as exc:
            raise self._error(f"{path}: 'units' is not valid UTF-8 ({exc.reason})") from exc
        return None if value is None else str(value)

    def glob(self, pattern: str) -> list[str]:
        """Absolute paths matching ``pattern``, in file order; ``[]`` when nothing matches.

        Segments are separated by ``/`` (a leading ``/`` is optional). A segment containing ``*``,
        ``?`` or ``[`` is a shell-style wildcard matched against the whole member name
        (``user_*`` matches ``user_SørenSchmidt``); other segments are literal names.
        """
        paths = [""]
        for segment in (s for s in pattern.split("/") if s):
            if not is_wildcard(segment):
                paths = [f"{prefix}/{segment}" for prefix in paths]
                continue
            rx = _compile_segment(segment)
            matched: list[str] = []
            for prefix in paths:
                group = self._get(prefix or "/")
                if isinstance(group, h5py.Group):
                    matched.extend(f"{prefix}/{name}" for name in group if rx.match(name))
            paths = matched
        return [p or "/" for p in paths if self._get(p or "/") is not None]


def plain(raw: Any) -> Any:
    """numpy/bytes value → Python value: bytes → str (UTF-8), 1 element → scalar, array → list."""
    if isinstance(raw, np.ndarray):
        if raw.size == 1:
            return plain(raw.reshape(-1)[0])
        return [plain(item) for item in raw.tolist()]
    if isinstance(raw, bytes):  # includes np.bytes_
        return raw.decode("utf-8")
    if isinstance(raw, np.generic):
        return plain(raw.item())
    if isinstance(raw, list | tuple):
        return [plain(item) for item in raw]
    return raw


def _simple_dtype(dtype: np.dtype[Any]) -> bool:
    """Numbers, fixed-size bytes and variable-length strings: read straight into an array.

    Anything else (compound, enum, array, reference, vlen sequence) goes through h5py's
    ``Dataset``, which knows their special cases.
    """
    if dtype.kind in "iufS":
        return dtype.subdtype is None and dtype.fields is None
    text = h5py.check_string_dtype(dtype)
    return dtype.kind == "O" and text is not None and text.length is None


def is_wildcard(text: str) -> bool:
    """Whether a NeXus path or path segment holds a glob pattern (the schema loader asks too)."""
    return any(c in text for c in "*?[")


@functools.lru_cache(maxsize=256)
def _compile_segment(segment: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(segment))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _file_size(h5: h5py.File, path: Path) -> int:
    try:
        return int(h5.id.get_filesize())
    except (OSError, ValueError):
        return Path(path).stat().st_size


def stored_nbytes(ds: h5py.Dataset) -> int:
    """Bytes that reading ``ds`` would bring into memory, found without reading it.

    For fixed-size types that is size times itemsize. For variable-length strings and sequences the
    itemsize is only a pointer: the data lives in the file's global heap. There the file stores one
    descriptor per element (4-byte length, then the heap id), so for contiguous and unfiltered
    chunked layouts we sum those lengths from the raw descriptors. Other layouts (compact, filtered)
    fall back to the pointer size, i.e. are not capped (a documented limit).
    """
    pointers = int(ds.size) * int(ds.dtype.itemsize)
    base = h5py.check_vlen_dtype(ds.dtype)
    text = h5py.check_string_dtype(ds.dtype)
    if base is None and (text is None or text.length is not None):
        return pointers
    element_bytes = 1 if text is not None else int(np.dtype(base).itemsize)
    lengths = _vlen_lengths(ds)
    if lengths is None:
        return pointers
    return sum(lengths) * element_bytes + pointers


def _vlen_lengths(ds: h5py.Dataset) -> list[int] | None:
    """Element lengths read from the stored descriptors, or None where they cannot be reached."""
    sizeof_addr, _sizeof_size = ds.file.id.get_create_plist().get_sizes()
    descriptor = struct.Struct(f"<I{sizeof_addr + 4}x")
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    raw = b""
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None:  # never written: nothing to read
            return []
        with open(ds.file.filename, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(descriptor.size * int(ds.size))
    elif layout == h5py.h5d.CHUNKED and plist.get_nfilters() == 0:
        raw = b"".join(
            ds.id.read_direct_chunk(ds.id.get_chunk_info(index).chunk_offset)[1]
            for index in range(ds.id.get_num_chunks())
        )
    else:
        return None
    usable = len(raw) - len(raw) % descriptor.size
    return [length for (length,) in descriptor.iter_unpack(raw[:usable])]
