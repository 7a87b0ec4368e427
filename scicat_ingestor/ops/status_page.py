"""The status page (``GET /`` on the health port): ``/status.json``'s data as one HTML page.

Server-rendered with inline CSS and SVG, so it needs no build step, no external asset and works
offline. Links are relative (``status.json``, ``ready``, ``metrics``), so the page also works
behind a reverse proxy under a path prefix. A small inline script re-fetches the page every
``REFRESH_SECONDS`` and swaps in its ``<main>``; without JavaScript a ``<meta refresh>`` does it.

File names, reasons and error texts come from outside (file-writer messages, file systems,
SciCat answers): every value goes through ``html.escape``, and ``CONTENT_SECURITY_POLICY`` lets
only this page's own script run, so an escaping mistake still could not run injected code.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

REFRESH_SECONDS = 5

_SCRIPT = (
    "setInterval(function(){fetch(location.href,{cache:'no-store'})"
    ".then(function(r){return r.text();}).then(function(t){"
    "var n=new DOMParser().parseFromString(t,'text/html').getElementById('status');"
    "var o=document.getElementById('status');"
    "if(n&&o){o.replaceWith(n);document.title=n.dataset.title;}})"
    ".catch(function(){var o=document.getElementById('status');"
    "if(o){o.classList.add('stale');}});}," + str(REFRESH_SECONDS * 1000) + ");"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)

# One colour per outcome label (the FILES metric's), used by the chart and the badges.
OUTCOME_COLOURS = {
    "created": "#2e7d32",
    "existed": "#1565c0",
    "dry_run": "#6a1b9a",
    "skipped": "#9e9e9e",
    "dead_lettered": "#c62828",
    "failed_permanent": "#ef6c00",
}
_OTHER_COLOUR = "#546e7a"
_STATE_COLOURS = {
    "running": "#2e7d32",
    "paused": "#ef6c00",
    "not ready": "#c62828",
    "stopping": "#546e7a",
}

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f6f8;
color:#1c2833}
main{max-width:1200px;margin:0 auto;padding:16px}
main.stale header{opacity:.6}
header{background:#fff;border-left:8px solid var(--state);padding:12px 16px;border-radius:6px;
box-shadow:0 1px 2px #0002}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:15px;margin:0 0 8px;color:#34495e}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;
font-weight:600;vertical-align:middle}
.big{background:var(--state);font-size:14px;text-transform:uppercase;letter-spacing:.05em}
.muted{color:#6c7a89;font-size:12px}
.muted a{color:#2c6fb7}
ul.why{margin:8px 0 0;padding-left:20px}
ul.why b{color:#c62828}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px;
margin-top:12px}
.card{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px #0002;
margin-top:12px;overflow-x:auto}
.grid .card{margin-top:0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e5e8eb;vertical-align:top}
td{overflow-wrap:anywhere}
td.t,.badge{white-space:nowrap}
th{color:#6c7a89;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.path{font-family:ui-monospace,monospace;word-break:break-all}
td.err{color:#c62828;word-break:break-word}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
dt{color:#6c7a89}
dd{margin:0;word-break:break-word}
svg{display:block;width:100%;height:auto}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 24px}
.legend span{margin-right:12px;font-size:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
"""

_CHART_WIDTH = 720
_CHART_HEIGHT = 110
_AXIS = 28  # left margin for the scale
_LABEL = "font-size='11' fill='#6c7a89'"


def render_page(status: Mapping[str, Any]) -> str:
    """The whole page for ``status`` (``HealthServer.status()``), every value escaped."""
    state = status["state"]
    title = f"scicat-ingestor: {state['name']}"
    colour = _STATE_COLOURS.get(state["name"], _OTHER_COLOUR)
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{_STYLE}</style>",
        f"<noscript><meta http-equiv='refresh' content='{REFRESH_SECONDS}'></noscript>",
        "</head><body>",
        f"<main id='status' data-title='{_e(title)}' style='--state:{colour}'>",
        _header(status),
        "<div class='grid'>",
        _source_card(status),
        _schemas_card(status.get("schemas")),
        _totals_card(status.get("totals", {})),
        "</div>",
        _history_card(status["history"]),
        _letters_card(status["dead_letters"]),
        _files_card(status["files"]),
        _checks_card(status["checks"]),
        "</main>",
        f"<script>{_SCRIPT}</script>",
        "</body></html>\n",
    ]
    return "".join(parts)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _header(status: Mapping[str, Any]) -> str:
    state = status["state"]
    why = "".join(
        f"<li><b>{_e(reason['cause'])}</b>: {_e(reason['detail'])}</li>"
        for reason in state["reasons"]
    )
    return (
        "<header><h1>scicat-ingestor "
        f"<span class='badge big'>{_e(state['name'])}</span></h1>"
        f"<div class='muted'>as of {_e(status['generated_at'])} · refreshes every "
        f"{REFRESH_SECONDS} s · <a href='status.json'>status.json</a> · "
        "<a href='ready'>ready</a> · <a href='metrics'>metrics</a></div>"
        + (f"<ul class='why'>{why}</ul>" if why else "")
        + "</header>"
    )


def _source_card(status: Mapping[str, Any]) -> str:
    source = status["source"]
    if status["trigger"] == "watch":
        rescan = source.get("last_rescan_seconds_ago")
        rows = [
            ("trigger", "watch"),
            ("directories", ", ".join(source["directories"]) or "none"),
            ("waiting to settle", source["waiting_to_settle"]),
            ("queued", source["queued"]),
            ("handed over", source["handed_over"]),
            ("last rescan", "not yet" if rescan is None else f"{rescan} s ago"),
        ]
        return f"<div class='card'><h2>Source</h2>{_dl(rows)}</div>"
    rows = [
        ("trigger", "kafka"),
        ("topics", ", ".join(source["topics"]) or "none"),
        ("assigned partitions", source["assigned_partitions"]),
        ("in flight", source["in_flight"]),
    ]
    table = _table(
        ("topic", "partition|num", "committed|num", "lag|num"),
        [
            (p["topic"], p["partition"], _maybe(p["committed"]), _maybe(p["lag"]))
            for p in source["partitions"]
        ],
        "no offsets committed yet",
    )
    return f"<div class='card'><h2>Source</h2>{_dl(rows)}{table}</div>"


def _schemas_card(schemas: Mapping[str, Any] | None) -> str:
    if schemas is None:
        return "<div class='card'><h2>Schemas</h2><p class='muted'>not loaded yet</p></div>"
    rows: list[tuple[str, object]] = [
        ("schemas", schemas["count"]),
        ("last reload", schemas["loaded_at"]),
        ("newest file", _maybe(schemas["newest_mtime"])),
    ]
    error = ""
    if schemas["last_error"]:
        error = (
            f"<p class='err'><b>last reload failed</b> at {_e(schemas['last_error_at'])} "
            f"(the previous set stays in use): {_e(schemas['last_error'])}</p>"
        )
    return f"<div class='card'><h2>Schemas</h2>{_dl(rows)}{error}</div>"


def _totals_card(totals: Mapping[str, int]) -> str:
    rows = [(label, count) for label, count in sorted(totals.items())]
    body = _dl(rows) if rows else "<p class='muted'>no file finished yet</p>"
    return f"<div class='card'><h2>Files since start</h2>{body}</div>"


def _history_card(history: Mapping[str, Any]) -> str:
    minutes = len(history["files_per_second"])
    span = minutes * history["bucket_seconds"] // 60
    outcomes: Mapping[str, Sequence[int]] = history["outcomes"]
    legend = "".join(
        f"<span><i style='background:{_colour(label)}'></i>{_e(label)} {sum(counts)}</span>"
        for label, counts in outcomes.items()
    )
    return (
        f"<div class='card'><h2>Last {span} minutes</h2><div class='charts'>"
        "<div><div class='muted'>files per second</div>"
        + _rate_chart(history["files_per_second"], span)
        + "</div><div><div class='muted'>outcomes per minute</div>"
        + _outcome_chart(outcomes, minutes, span)
        + f"<div class='legend'>{legend}</div></div></div></div>"
    )


def _rate_chart(rates: Sequence[float], span: int) -> str:
    top = max(max(rates, default=0.0), 0.001)
    step = (_CHART_WIDTH - _AXIS) / max(len(rates) - 1, 1)
    points = " ".join(f"{_AXIS + i * step:.1f},{_y(rate, top):.1f}" for i, rate in enumerate(rates))
    area = f"{_AXIS},{_CHART_HEIGHT} {points} {_CHART_WIDTH},{_CHART_HEIGHT}"
    return _svg(
        f"files per second, peak {top:g}",
        span,
        _scale(f"{top:.3g}")
        + f"<polygon points='{area}' fill='#1565c033'/>"
        + f"<polyline points='{points}' fill='none' stroke='#1565c0' stroke-width='1.5'/>",
    )


def _outcome_chart(outcomes: Mapping[str, Sequence[int]], minutes: int, span: int) -> str:
    totals = [sum(counts[i] for counts in outcomes.values()) for i in range(minutes)]
    top = max(max(totals, default=0), 1)
    width = (_CHART_WIDTH - _AXIS) / max(minutes, 1)
    bars: list[str] = []
    for i in range(minutes):
        base = float(_CHART_HEIGHT)
        for label, counts in outcomes.items():
            if not counts[i]:
                continue
            height = counts[i] / top * (_CHART_HEIGHT - 4)
            base -= height
            bars.append(
                f"<rect x='{_AXIS + i * width + 0.5:.1f}' y='{base:.1f}' "
                f"width='{max(width - 1, 0.5):.1f}' height='{height:.1f}' "
                f"fill='{_colour(label)}'><title>{_e(label)}: {counts[i]}</title></rect>"
            )
    return _svg(f"outcomes per minute, peak {top}", span, _scale(str(top)) + "".join(bars))


def _svg(label: str, span: int, body: str) -> str:
    """A chart with a baseline and its time axis (``span`` minutes ago ... now)."""
    axis = (
        f"<line x1='{_AXIS}' y1='{_CHART_HEIGHT}' x2='{_CHART_WIDTH}' y2='{_CHART_HEIGHT}' "
        "stroke='#b0bec5'/>"
        f"<text x='{_AXIS}' y='{_CHART_HEIGHT + 14}' {_LABEL}>-{span} min</text>"
        f"<text x='{_CHART_WIDTH}' y='{_CHART_HEIGHT + 14}' {_LABEL} text-anchor='end'>now</text>"
    )
    return (
        f"<svg viewBox='0 0 {_CHART_WIDTH} {_CHART_HEIGHT + 18}' role='img' "
        f"aria-label='{_e(label)}' xmlns='http://www.w3.org/2000/svg'>{axis}{body}</svg>"
    )


def _scale(top: str) -> str:
    return (
        f"<text x='{_AXIS - 4}' y='12' {_LABEL} text-anchor='end'>"
        f"{_e(top)}</text><line x1='{_AXIS}' y1='4' x2='{_CHART_WIDTH}' y2='4' "
        "stroke='#eceff1' stroke-dasharray='3 3'/>"
    )


def _y(value: float, top: float) -> float:
    return _CHART_HEIGHT - value / top * (_CHART_HEIGHT - 4)


def _files_card(files: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for record in files:
        link = _e(record["pid"]) if record["pid"] else ""
        if record["url"]:
            link = f"<a href='{_e(record['url'])}' rel='noreferrer'>{link}</a>"
        rows.append(
            "<tr>"
            f"<td class='t' title='{_e(record['at'])}'>{_e(_clock(record['at']))}</td>"
            f"<td class='path'>{_e(record['file'])}</td>"
            f"<td>{_badge(record['outcome'])}</td>"
            f"<td class='num'>{record['seconds']:.2f}</td>"
            f"<td class='path'>{link}</td></tr>"
        )
    body = _raw_table(
        ("time", "file", "outcome", "seconds|num", "dataset"), rows, "no file finished yet"
    )
    return f"<div class='card'><h2>Last files</h2>{body}</div>"


def _letters_card(letters: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "<tr>"
        f"<td class='t' title='{_e(letter['at'])}'>{_e(_clock(letter['at']))}</td>"
        f"<td class='path'>{_e(letter['subject'])}</td>"
        f"<td class='err'>{_e(letter['reason'])}</td></tr>"
        for letter in letters
    ]
    body = _raw_table(("time", "file or message", "reason"), rows, "no dead letter")
    return f"<div class='card'><h2>Dead letters</h2>{body}</div>"


def _checks_card(checks: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        "<tr>"
        f"<td>{_e(name)}</td><td>{_badge('ok' if check['ok'] else 'failing')}</td>"
        f"<td>{_e(check['detail'])}</td></tr>"
        for name, check in checks.items()
    ]
    body = _raw_table(("check", "", "detail"), rows, "")
    return f"<div class='card'><h2>Readiness checks</h2>{body}</div>"


def _badge(label: str) -> str:
    colour = {"ok": "#2e7d32", "failing": "#c62828"}.get(label) or _colour(label)
    return f"<span class='badge' style='background:{colour}'>{_e(label)}</span>"


def _colour(label: str) -> str:
    return OUTCOME_COLOURS.get(label, _OTHER_COLOUR)


def _dl(rows: Iterable[tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows) + "</dl>"


def _table(heads: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    cells = [
        "<tr>"
        + "".join(
            f"<td{_num(head)}>{_e(value)}</td>" for head, value in zip(heads, row, strict=True)
        )
        + "</tr>"
        for row in rows
    ]
    return _raw_table(heads, cells, empty)


def _raw_table(heads: Sequence[str], rows: Sequence[str], empty: str) -> str:
    """A table of already-escaped ``rows``; a head ``name|num`` is right-aligned."""
    if not rows:
        return f"<p class='muted'>{_e(empty)}</p>" if empty else ""
    head = "".join(f"<th{_num(h)}>{_e(h.split('|')[0])}</th>" for h in heads)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _num(head: str) -> str:
    return " class='num'" if head.endswith("|num") else ""


def _maybe(value: object) -> object:
    return "-" if value is None else value


def _clock(iso: str) -> str:
    """``HH:MM:SS`` of an ISO time (the full time is the cell's tooltip)."""
    return iso[11:19] if len(iso) >= 19 else iso
