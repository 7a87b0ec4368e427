"""Threads take turns with h5py, one open file at a time, and give the turn away for lookups."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import pytest

from scicat_ingestor.lookups import LookupCache
from scicat_ingestor.nexus import H5PY_TURNS, open_nexus
from scicat_ingestor.pipeline import _Fetcher

WAIT = 5.0  # seconds a step that should happen may take
BLOCKED = 0.3  # seconds a step that should not happen is given


def _nexus(path: Path) -> Path:
    with h5py.File(path, "w") as h5:
        h5["entry/title"] = "turns"
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return _nexus(tmp_path / "a.nxs"), _nexus(tmp_path / "b.nxs")


def _read_title(path: Path) -> None:
    with open_nexus(path) as reader:
        assert reader.read_text("entry/title") == "turns"


def _reading(path: Path) -> threading.Event:
    """Another worker reading ``path``: the event is set once it has read and closed it."""
    done = threading.Event()

    def run() -> None:
        _read_title(path)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def test_a_second_thread_waits_until_the_first_closes_its_file(files: tuple[Path, Path]) -> None:
    first, second = files
    with open_nexus(first):
        done = _reading(second)
        assert not done.wait(BLOCKED)
    assert done.wait(WAIT)


def test_a_paused_turn_lets_another_thread_read(files: tuple[Path, Path]) -> None:
    first, second = files
    with open_nexus(first) as reader:
        with H5PY_TURNS.paused():
            assert _reading(second).wait(WAIT)
        # the turn is ours again: the file is still open and readable, others wait
        assert reader.read_text("entry/title") == "turns"
        later = _reading(second)
        assert not later.wait(BLOCKED)
    assert later.wait(WAIT)


def test_turns_are_reentrant_within_a_thread(files: tuple[Path, Path]) -> None:
    first, second = files
    with open_nexus(first):
        with open_nexus(second) as inner:  # a second file in the same thread: no deadlock
            assert inner.read_text("entry/title") == "turns"
        done = _reading(second)
        assert not done.wait(BLOCKED)  # closing the inner file kept the outer turn
        with H5PY_TURNS.paused():
            assert done.wait(WAIT)


def test_a_scicat_lookup_gives_the_turn_away(files: tuple[Path, Path]) -> None:
    """An SC lookup against a slow SciCat must not hold up every other worker's file."""
    first, second = files

    def slow_scicat(url: str) -> dict[str, str]:
        assert _reading(second).wait(WAIT), "another worker could not read its file meanwhile"
        return {"url": url}

    fetch = _Fetcher(LookupCache(slow_scicat, 0))
    with open_nexus(first):
        assert fetch("proposals/1") == {"url": "proposals/1"}
