"""Files on disk: path safety, stats, checksums, side files, file-list paths."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from scicat_ingestor.config.model import HASH_ALGORITHMS, FileHandlingOptions
from scicat_ingestor.ops.metrics import BYTES_HASHED
from scicat_ingestor.ops.turns import TURNS

logger = logging.getLogger("scicat_ingestor.files")

MIB = 1024 * 1024
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"


@dataclass(frozen=True)
class FileEntry:
    """One ``dataFileList`` item; ``None`` fields are left out of the SciCat payload."""

    path: str
    size: int | None
    time: str
    chk: str | None
    uid: str | None
    gid: str | None
    perm: str | None

    def to_dto(self) -> dict[str, Any]:
        """SciCat's ``DataFile`` body; its types do not allow null, so None fields are left out."""
        fields = {
            "path": self.path,
            "size": self.size,
            "time": self.time,
            "chk": self.chk,
            "uid": self.uid,
            "gid": self.gid,
            "perm": self.perm,
        }
        return {k: v for k, v in fields.items() if v is not None}


class PathRefused(Exception):  # noqa: N818 - name agreed with the other modules
    """A data file path that must not be read (outside the data roots, not absolute)."""


def checksum(path: Path, algorithm: str = "blake2b", chunk_bytes: int = 4 * MIB) -> str:
    """Hex digest of a file, streamed through one reused buffer.

    ``readinto`` a preallocated buffer avoids a new bytes object per chunk, and large chunks keep
    the per-call overhead small, so this runs at hashlib's own speed (bench/bench_hashing.py).
    Reads and hashing run without the GIL, so the worker gives its turn away meanwhile, unless
    the file fits in one chunk: that is hashed in less time than handing the turn over takes.
    """
    if algorithm not in HASH_ALGORITHMS:
        raise ValueError(f"unsupported file_hash_algorithm {algorithm!r}")
    digest = hashlib.new(algorithm)
    buffer = bytearray(max(chunk_bytes, 64 * 1024))
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as stream:
        info = os.fstat(stream.fileno())
        small = stat.S_ISREG(info.st_mode) and info.st_size <= len(buffer)
        with contextlib.nullcontext() if small else TURNS.paused():
            while n := stream.readinto(view):
                digest.update(view[:n])
                BYTES_HASHED.inc(n)
    return digest.hexdigest()


def format_time(timestamp: float) -> str:
    """A POSIX timestamp in SciCat's ``DataFile.time`` form (UTC, whole seconds)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime(_TIME_FORMAT)


def stat_entry(path: Path, compute_stats: bool, chk: str | None) -> FileEntry:
    """The file-list entry of ``path`` (listed under the path as given, made absolute).

    ``time`` is the modification time: it is when the writer last wrote the data. Upstream used
    ``st_ctime``, which also moves on chmod/chown/rename/restore and so is not the data's time.
    ``size`` is always filled because SciCat's ``DataFile`` requires it; ``compute_stats`` controls
    owner, permissions and time (without it the time is "now", as upstream).
    """
    st = path.stat()
    listed = Path(os.path.abspath(path)).as_posix()
    if not compute_stats:
        now = format_time(datetime.now(UTC).timestamp())
        return FileEntry(listed, st.st_size, now, chk, None, None, None)
    return FileEntry(
        path=listed,
        size=st.st_size,
        time=format_time(st.st_mtime),
        chk=chk,
        uid=str(st.st_uid),
        gid=str(st.st_gid),
        perm=oct(st.st_mode),
    )


def resolve_in_roots(path: str, roots: Sequence[str]) -> Path:
    """The real path of ``path``, refused unless it lies inside one of ``roots``.

    Symlinks are resolved on both sides, so a link inside a root that points outside is refused,
    and a root that is itself a link (``/data`` → ``/mnt/data``) still works. Without roots only
    the "absolute path" rule applies.
    """
    if not os.path.isabs(path):
        raise PathRefused(f"{path}: not an absolute path")
    real = _resolve(path, path)
    if not roots:
        return real
    real_roots = [_resolve(r, path) for r in roots]
    if any(real.is_relative_to(root) for root in real_roots):
        return real
    lexical = Path(os.path.normpath(path))
    lexical_roots = [Path(os.path.normpath(os.path.abspath(r))) for r in roots]
    inside_lexically = any(lexical.is_relative_to(root) for root in (*lexical_roots, *real_roots))
    where = ", ".join(str(r) for r in roots)
    if inside_lexically:
        reason = f"a symlink leads outside the data roots (to {real})"
    elif ".." in PurePosixPath(path).parts:
        reason = f"'..' leads outside the data roots (to {lexical})"
    else:
        reason = "outside the data roots"
    raise PathRefused(f"{path}: {reason}; data roots: {where}")


def _resolve(path: str, subject: str) -> Path:
    """``Path.resolve`` with a symlink loop (RuntimeError on Python 3.11) as a refusal."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:
        raise PathRefused(f"{subject}: cannot resolve {path}: {err}") from err


def require_regular_file(path: Path) -> None:
    """Refuse FIFOs, devices, sockets and directories: opening a FIFO blocks until a writer comes.

    A missing file passes: whether it appears later is the opener's (transient) question.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise PathRefused(f"{path}: cannot stat: {err.strerror or err}") from err
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "special file")
        raise PathRefused(f"{path}: not a regular file (a {kind})")


_FILE_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


def side_file_directory(fh: FileHandlingOptions, nexus: Path) -> Path:
    """Where side files go: absolute as configured, else relative to the NeXus file's folder.

    The path is normalised lexically, not resolved: listed side files must stay under
    ``sourceFolder``, which the schemas derive from the NeXus path as given.
    """
    return Path(os.path.normpath(nexus.parent / Path(fh.ingestor_files_directory)))


def ingestor_directory(fh: FileHandlingOptions, nexus: Path) -> Path:
    """``side_file_directory``, created when missing (upstream failed to write the hash file
    into a missing directory)."""
    directory = side_file_directory(fh, nexus)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_atomically(target: Path, text: str) -> None:
    """Write via a temporary file + rename, so a concurrent reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SideFileCollision(OSError):  # noqa: N818 - an OSError: the pipeline refuses the file
    """A side-file name is claimed by another data file, under both of its possible names."""


_OWNER_SUFFIX = ".owner"


def side_file_base(directory: Path, nexus: Path) -> str:
    """The name (without extension) this data file's side files get in ``directory``.

    Upstream's ``<nexus stem>`` (the ESS layout) unless another data file claimed it first: with
    ``../ingestor``, ``a/run.hdf`` and ``b/run.hdf`` share ``ingestor/``, and upstream let the
    second overwrite the first's hash file. Each name is claimed by a hidden owner file
    ``.<name>.owner`` holding the data file's path; a data file that finds the plain name owned by
    another uses ``<stem>.<parent folder>-<8 hex of its path's blake2b>`` instead, which depends on
    its path only. Side files written before owner files existed are taken over, as upstream did.
    """
    owner = os.path.normpath(os.path.abspath(nexus))
    plain = nexus.stem
    if _claim(directory, plain, owner):
        return plain
    tag = hashlib.blake2b(owner.encode(), digest_size=4).hexdigest()
    other = f"{plain}.{nexus.parent.name or 'root'}-{tag}"
    claimed = _claim(directory, other, owner)
    if claimed == "new":  # said once, when the name is first taken
        logger.warning(
            "%s: side file name %s is taken by %s; using %s",
            owner,
            plain,
            _owner_of(directory, plain),
            other,
        )
    if claimed:
        return other
    raise SideFileCollision(
        f"side file names {plain} and {other} in {directory} both belong to other data files "
        f"({_owner_of(directory, plain)}, {_owner_of(directory, other)})"
    )


def _claim(directory: Path, name: str, owner: str) -> Literal["new", "ours", ""]:
    """Whether ``name`` is (now) ``owner``'s: claimed atomically by a hard link, first one wins."""
    marker = directory / f".{name}{_OWNER_SUFFIX}"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".claim")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(owner + "\n")
        os.chmod(tmp, 0o644)  # readable like the side files it stands for
        os.link(tmp, marker)
        return "new"
    except FileExistsError:
        return "ours" if _owner_of(directory, name) == owner else ""
    finally:
        Path(tmp).unlink(missing_ok=True)


def _owner_of(directory: Path, name: str) -> str:
    return (directory / f".{name}{_OWNER_SUFFIX}").read_text(encoding="utf-8").strip()


def side_file_path(directory: Path, nexus: Path, extension: str) -> Path:
    """``<directory>/<side_file_base>.<extension>``: upstream's naming unless the name is taken."""
    return directory / f"{side_file_base(directory, nexus)}.{extension.lstrip('.')}"


def write_hash_file(directory: Path, nexus: Path, digest: str, extension: str) -> Path:
    """Write the hex digest (no newline, as upstream) next to the other side files."""
    target = side_file_path(directory, nexus, extension)
    _write_atomically(target, digest)
    return target


def write_message_file(
    directory: Path, nexus: Path, message: Mapping[str, Any], extension: str
) -> Path:
    """Dump the file-writer's message as one JSON object (upstream wrote a one-element array)."""
    target = side_file_path(directory, nexus, extension)
    _write_atomically(target, json.dumps(dict(message), indent=2, default=str) + "\n")
    return target


def relative_to_source_folder(
    entries: Sequence[FileEntry],
    source_folder: str,
    path_type: Literal["relative", "absolute"],
) -> list[FileEntry]:
    """Paths as SciCat wants them: relative to ``sourceFolder`` (exactly once) or absolute.

    Raises ValueError naming the file when a listed file is outside ``sourceFolder``.
    """
    if path_type == "absolute":
        return list(entries)
    folder = PurePosixPath(os.path.normpath(source_folder))
    result = []
    for entry in entries:
        path = PurePosixPath(entry.path)
        if not path.is_relative_to(folder):
            raise ValueError(
                f"{entry.path} is not inside sourceFolder {source_folder}"
                " (file_path_type: relative); fix the schema's sourceFolder,"
                " ingestor_files_directory, or use file_path_type: absolute"
            )
        result.append(replace(entry, path=path.relative_to(folder).as_posix()))
    return result
