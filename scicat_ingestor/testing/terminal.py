"""Run a command in a pseudo-terminal and see what a user would see (tests, the benchmark).

``run_in_pty`` gives the command a tty as stdin, stdout and stderr (so it draws its progress bar),
collects everything it writes, when a marker first appeared and its peak RSS; ``screen`` turns that
output into the lines a terminal would show (``\\r`` redraws a line in place).
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PtyRun:
    exit_code: int
    output: str
    marker_after: float | None  # seconds from the start until ``marker`` was first written
    peak_rss_mib: float


def run_in_pty(
    argv: Sequence[str],
    columns: int = 160,
    marker: bytes = b"",
    env: Mapping[str, str] | None = None,
) -> PtyRun:
    """Run ``argv`` on a fresh pty of ``columns`` columns until it exits."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environment = {**(env if env is not None else os.environ), "COLUMNS": str(columns)}
    started = time.monotonic()
    child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=environment)
    os.close(slave)
    chunks: list[bytes] = []
    marker_after: float | None = None
    tail = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
        if marker and marker_after is None:
            tail = (tail + chunk)[-(len(marker) + 65536) :]
            if marker in tail:
                marker_after = time.monotonic() - started
    os.close(master)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    output = b"".join(chunks).decode("utf-8", "replace")
    return PtyRun(child.returncode, output, marker_after, usage.ru_maxrss / 1024)  # KiB on Linux


def screen(output: str) -> list[str]:
    """The non-empty lines a terminal shows for ``output`` (no escape sequences expected)."""
    if "\x1b" in output:
        raise ValueError("escape sequences are not emulated")
    lines = [""]
    column = 0
    for char in output:
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("")
            column = 0
        else:
            line = lines[-1].ljust(column)
            lines[-1] = line[:column] + char + line[column + 1 :]
            column += 1
    return [line.rstrip() for line in lines if line.strip()]
