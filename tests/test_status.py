"""The status page's recorder (bounded ring buffers) and its HTML rendering (escaping, charts)."""

from __future__ import annotations

import re
import tracemalloc
from html.parser import HTMLParser
from typing import Any

from scicat_ingestor.ops.status import MAX_TEXT, SourceInfo, StatusRecorder
from scicat_ingestor.ops.status_page import render_page

HOSTILE = "<script>alert(1)</script>.hdf"
START = 1_796_000_000.0  # a minute boundary (epoch seconds)


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def status(recorder: StatusRecorder, source: SourceInfo | None = None) -> dict[str, Any]:
    """A ``HealthServer.status()``-shaped document around the recorder's view."""
    body: dict[str, Any] = {
        "generated_at": "2026-11-30T00:53:20+00:00",
        "state": {"name": "running", "ready": True, "reasons": []},
        "checks": {"scicat": {"ok": True, "detail": "health endpoint answered"}},
        "trigger": "kafka",
        "source": {"topics": ["t"], "assigned_partitions": 1, "in_flight": 0, "partitions": []},
        "schemas": None,
    }
    body.update(recorder.view(source or SourceInfo()))
    return body


def test_memory_stays_bounded_over_100000_files() -> None:
    clock = Clock()
    recorder = StatusRecorder(recent=50, clock=clock)

    def record(count: int) -> None:
        for i in range(count):
            clock.now += 0.1  # 10 files/s: 100,000 files span 2.8 hours, every slot reused
            recorder.file_finished(f"/data/run-{i:06d}-{'x' * 100}.hdf", "created", 0.5, f"p{i}")
            if i % 10 == 0:
                recorder.dead_letter(f"/data/bad-{i}.hdf", "not a NeXus file " * 10)

    record(40_000)  # fill the hour and the deques first
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    record(60_000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    view = recorder.view(SourceInfo())
    assert len(view["files"]) == 50
    assert len(view["dead_letters"]) == 50
    assert view["files"][0]["pid"] == "p59999"  # newest first
    assert view["totals"] == {"created": 100_000}
    assert len(view["history"]["files_per_second"]) == 60
    assert view["history"]["outcomes"]["created"][-2] == 600  # a whole minute at 10/s
    assert grown < 64 * 1024, f"{grown} bytes more after 60,000 further files"


def test_history_keeps_one_hour_per_minute_and_forgets_older_minutes() -> None:
    clock = Clock()
    recorder = StatusRecorder(clock=clock)
    recorder.file_finished("/a.hdf", "created", 1.0)
    recorder.file_finished("/b.hdf", "dead_lettered", 1.0)
    clock.now += 120
    recorder.file_finished("/c.hdf", "created", 1.0)
    history = recorder.view(SourceInfo())["history"]
    assert history["bucket_seconds"] == 60
    assert history["outcomes"]["created"][-3:] == [1, 0, 1]
    assert history["outcomes"]["dead_lettered"][-3:] == [1, 0, 0]
    assert history["files_per_second"][-3] == round(2 / 60, 3)
    clock.now += 3600  # an hour later the slots of those minutes hold nothing
    later = recorder.view(SourceInfo())["history"]
    assert later["outcomes"] == {}
    assert later["files_per_second"] == [0.0] * 60
    assert len(recorder.view(SourceInfo())["files"]) == 3  # the last files stay listed


def test_long_names_and_reasons_are_cut() -> None:
    recorder = StatusRecorder()
    recorder.file_finished("/" + "d" * 10_000, "created", 1.0)
    recorder.dead_letter("/x.hdf", "r" * 10_000)
    view = recorder.view(SourceInfo())
    assert len(view["files"][0]["file"]) == MAX_TEXT
    assert view["dead_letters"][0]["reason"].endswith("…")


def test_dataset_links_only_for_created_and_existed_with_a_frontend() -> None:
    recorder = StatusRecorder()
    recorder.file_finished("/a.hdf", "created", 1.0, "20.500.12269/a b")
    recorder.file_finished("/b.hdf", "dry_run", 1.0, "20.500.12269/b")
    with_frontend = recorder.view(SourceInfo(frontend_url="https://scicat.example/app/"))
    assert [f["url"] for f in with_frontend["files"]] == [
        "",
        "https://scicat.example/app/datasets/20.500.12269%2Fa%20b",
    ]
    assert all(f["url"] == "" for f in recorder.view(SourceInfo())["files"])


class _Collect(HTMLParser):
    """Text, tags and attribute values as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(value or "" for _, value in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_untrusted_values_appear_as_text_only() -> None:
    recorder = StatusRecorder()
    recorder.file_finished(f"/data/{HOSTILE}", "created", 1.0, "pid'><script>x</script>")
    recorder.dead_letter(f"/data/{HOSTILE}", "bad \"quote' <img src=x onerror=alert(1)>")
    document = status(recorder, SourceInfo(frontend_url="https://scicat.example"))
    document["state"] = {
        "name": "paused",
        "ready": False,
        "reasons": [{"cause": "SciCat auth", "detail": "refused <b>creds</b>"}],
    }
    page = render_page(document)
    parsed = _Collect()
    parsed.feed(page)
    assert parsed.tags.count("script") == 1  # the page's own refresh script only
    assert "img" not in parsed.tags
    assert "b" in parsed.tags  # the page's own bold cause label
    text = "".join(parsed.text)
    assert f"/data/{HOSTILE}" in text
    assert "bad \"quote' <img src=x onerror=alert(1)>" in text
    assert "refused <b>creds</b>" in text
    link = "https://scicat.example/datasets/pid%27%3E%3Cscript%3Ex%3C%2Fscript%3E"
    assert link in parsed.attributes


def test_page_shows_state_source_schemas_charts_and_relative_links_only() -> None:
    clock = Clock()
    recorder = StatusRecorder(clock=clock)
    for outcome in ("created", "created", "dead_lettered"):
        recorder.file_finished("/a.hdf", outcome, 0.5)
    document = status(recorder)
    document["schemas"] = {
        "count": 4,
        "newest_mtime": None,
        "loaded_at": "2026-11-30T00:55:00+00:00",
        "last_error": "broken.imsc.yml: id: missing",
        "last_error_at": "2026-11-30T00:56:00+00:00",
    }
    document["source"]["partitions"] = [{"topic": "t", "partition": 0, "committed": 9, "lag": 2}]
    page = render_page(document)
    assert "<title>scicat-ingestor: running</title>" in page
    assert page.count("<svg") == 2
    assert "<rect" in page and "<polyline" in page
    assert "broken.imsc.yml: id: missing" in page
    assert "created 2" in page and "dead_lettered 1" in page
    links = re.findall(r"(?:href|src)='([^']*)'", page)
    assert links == ["status.json", "ready", "metrics"]  # relative: works under a path prefix
    assert "http" not in "".join(re.findall(r"<(?:link|script|img)[^>]*>", page))


def test_watch_trigger_shows_the_directories() -> None:
    document = status(StatusRecorder())
    document["trigger"] = "watch"
    document["source"] = {
        "directories": ["/data/<in>"],
        "waiting_to_settle": 1,
        "queued": 2,
        "handed_over": 3,
        "last_rescan_seconds_ago": None,
        "events": 4,
        "found_by_rescan": 0,
    }
    page = render_page(document)
    assert "/data/&lt;in&gt;" in page
    assert "not yet" in page
