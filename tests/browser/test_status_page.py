"""The status page (``GET /`` on the health port) in a real browser: headless Chromium loads it
from a daemon process (``scicat_ingestor run``) on the broker and the SciCat stand-in, through a
reverse proxy that serves it under a path prefix, as a facility would.

Checked on the DOM Chromium built (after its scripts ran): the state, created files with their
frontend links, a dead letter whose file name is HTML (``<script>alert(1)</script>.hdf``) shown
as text and never run, the page's own refresh picking up files ingested after it was loaded, and
intake paused by an auth outage saying why. Screenshots land in the test's directory (the docs'
``docs/operator/status-page.png`` is one of them).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers.daemon_kit import Kit, make_kit, new_group
from helpers.wait import wait_until
from scicat_ingestor.testing.broker import free_port
from scicat_ingestor.testing.daemon_process import DaemonProcess, write_config
from scicat_ingestor.testing.filewriter import FakeFileWriter, WrittenFile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "chromium not found: the status page browser tests need Debian's chromium "
        "(make test-browser installs it when run as root)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.broker]

PREFIX = "/ingestor/"
HOSTILE = "<script>alert(1)</script>.hdf"
FRONTEND = "https://scicat.example/frontend"


class PrefixProxy(ThreadingHTTPServer):
    """A reverse proxy serving the health port under ``PREFIX``; can hold the page's refresh.

    With ``hold`` set, every page request after the first waits for ``release`` (the test
    changes what the page will show in between); ``held`` says one is waiting.
    """

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.hold = False
        self.page_requests = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PREFIX}"

    def fetch(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.split("?", maxsplit=1)[0] == PREFIX:
            self.page_requests += 1
            if self.hold and self.page_requests > 1:
                self.held.set()
                self.release.wait(120)
        try:
            with self._opener.open(self.upstream + path[len(PREFIX) - 1 :], timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: PrefixProxy

    def do_GET(self) -> None:
        if not self.path.startswith(PREFIX):
            self.send_error(404)
            return
        status, headers, body = self.server.fetch(self.path)
        self.send_response(status)
        for name in ("Content-Type", "Content-Security-Policy", "Cache-Control"):
            if name in headers:
                self.send_header(name, headers[name])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the page refreshes every 5 s."""


class Browser:
    """Headless Chromium runs, each with a fresh profile in ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.runs = 0

    def command(self, url: str, *flags: str) -> list[str]:
        self.runs += 1
        profile = self.tmp_path / f"chromium-profile-{self.runs}"
        assert CHROMIUM is not None
        return [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *flags,
            url,
        ]

    def dump_dom(self, url: str) -> str:
        command = self.command(url, "--dump-dom")
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def screenshot(self, url: str, name: str) -> Path:
        path = self.tmp_path / name
        flags = ("--window-size=1280,1100", f"--screenshot={path}")
        command = self.command(url, *flags)
        done = subprocess.run(command, check=False, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path


class Dom(HTMLParser):
    """What a reader sees: the text, plus the tags and links of the DOM Chromium dumped."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text_parts: list[str] = []
        self.tags: list[str] = []
        self.links: list[str] = []
        self.feed(html)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links.extend(value or "" for name, value in attrs if name == "href")

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)


def start_daemon(kit: Kit, topic: str, port: int) -> DaemonProcess:
    data = kit.config_data(
        topic,
        new_group(),
        {
            "health_check.enabled": True,
            "health_check.host": "127.0.0.1",
            "health_check.port": port,
            "scicat.frontend_url": FRONTEND,
        },
    )
    process = DaemonProcess(write_config(kit.tmp_path / "daemon.yml", data), kit.tmp_path / "log")
    process.start()
    process.wait_for_log(r"assigned .*\[0\]", timeout=60)
    return process


def announce_hostile(writer: FakeFileWriter, data_dir: Path) -> Path:
    """A file whose name is HTML (the '/' makes ``<script>alert(1)<`` a directory), not NeXus."""
    path = data_dir / HOSTILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an HDF5 file\n")
    job = str(uuid.uuid4())
    writer.announce([WrittenFile(path=path, job_id=job, entry_uuid=job)])
    return path


def check_refresh(kit: Kit, writer: FakeFileWriter, proxy: PrefixProxy, browser: Browser) -> None:
    """The page is loaded, new files arrive, its own next fetch shows them.

    Chromium's virtual time runs the 5 s timer at once and waits for the fetch, which the proxy
    holds until the new files are ingested.
    """
    proxy.hold = True
    loading = subprocess.Popen(
        browser.command(proxy.url, "--dump-dom", "--virtual-time-budget=8000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proxy.held.wait(60), "the page never re-fetched itself"
        later = writer.write_and_announce(2)
        wait_until(lambda: len(kit.standin.datasets) >= 5, "5 datasets")
        proxy.release.set()
        refreshed, _ = loading.communicate(timeout=120)
    finally:
        loading.kill()
        proxy.hold = False
    for written in later:
        assert str(written.path) in Dom(refreshed).text


def test_status_page_in_chromium(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    kit = make_kit(request, tmp_path)
    topic = kit.make_topic(1)
    writer = kit.writer(topic)
    port = free_port()
    daemon = start_daemon(kit, topic, port)
    proxy = PrefixProxy(f"http://127.0.0.1:{port}")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    browser = Browser(tmp_path)
    try:
        first = writer.write_and_announce(3)
        wait_until(lambda: len(kit.standin.datasets) >= 3, "3 datasets")
        hostile = announce_hostile(writer, tmp_path / "data")
        wait_until(lambda: len(kit.dead_letters()) == 1, "the dead letter")

        # Loaded through the proxy: relative links and the refresh work under the prefix.
        dom = Dom(browser.dump_dom(proxy.url))
        assert "running" in dom.text
        for written in first:
            assert str(written.path) in dom.text
        pids = [pid for pid in kit.standin.datasets if pid.endswith(first[0].entry_uuid)]
        assert f"{FRONTEND}/datasets/{pids[0].replace('/', '%2F')}" in dom.links
        assert f"{hostile}" in dom.text  # as text, in the files and the dead letters
        assert dom.text.count(str(hostile)) >= 3  # file row, letter subject, letter reason
        assert dom.tags.count("script") == 1  # only the page's own; nothing injected ran
        assert "dead_lettered" in dom.text
        assert {"status.json", "ready", "metrics"} <= set(dom.links)

        check_refresh(kit, writer, proxy, browser)
        browser.screenshot(proxy.url, "status-page.png")

        # An auth outage: intake pauses and the page says why.
        kit.standin.faults.reject_credentials(60.0)
        writer.write_and_announce(2)

        def paused() -> bool:
            text = Dom(browser.dump_dom(proxy.url)).text
            return "paused" in text and "SciCat auth" in text

        wait_until(paused, "the page showing the auth outage", timeout=60)
        text = Dom(browser.dump_dom(proxy.url)).text
        assert "SciCat refuses our credentials" in text
        assert "SciCat outage" not in text  # SciCat answers: auth alone is the reason
        browser.screenshot(proxy.url, "status-page-paused.png")
    finally:
        proxy.release.set()
        proxy.shutdown()
        proxy.server_close()
        daemon.kill()
