"""A small PNG of a NeXus file's default plot, for SciCat's dataset attachment.

What to draw comes from the file (the NeXus *default plot* convention): the root's ``@default``
names an NXentry, whose ``@default`` names an NXdata group (or a further NXentry/NXsubentry);
the NXdata's ``@signal`` names the dataset and ``@axes`` its axes. Without that chain, the first
NXdata with a ``@signal`` (breadth first, hard links only, at most ``MAX_GROUPS_VISITED`` groups)
is used. A schema can name the group or dataset instead (its ``thumbnail:`` key).

Cost is bounded before anything is read: the read is one strided hyperslab whose chunks (HDF5
reads whole chunks from disk) hold at most ``max_points`` values, so a 2 GiB detector image costs
what ``max_points`` costs. Rendering is Pillow only (matplotlib's Agg took ~20x longer per
picture and its import adds ~50 MB to the process; ``python -m bench.thumbnails``). Every
failure is a ``ThumbnailError`` whose ``reason`` is one of ``REASONS`` (a metric label) and whose
text says why.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scicat_ingestor.ops.turns import TURNS

MAX_GROUPS_VISITED = 500
MAX_DEFAULT_HOPS = 8
# Samples kept per axis before the chunk budget: enough for a 400 x 300 picture.
LINE_POINTS = 1000
IMAGE_SIDE = 256
FRAMES_SUMMED = 16
# HDF5's default sieve buffer: a strided read of contiguous data fetches up to this per sample.
SIEVE_BYTES = 64 * 1024
# Data spanning at least this many decades (all values ≥ 0) is drawn on a log scale.
LOG_DECADES = 3.0

WIDTH, HEIGHT = 400, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 78, 24, 40
BAR_WIDTH = 14
NAN_RGB = (200, 200, 200)
INK = (40, 40, 40)
LINE_RGB = (31, 119, 180)

REASONS = (
    "no_plot",  # no default plot, no NXdata with @signal, a broken @default chain or schema path
    "unsupported",  # not numeric, 0-d, or empty
    "too_large",  # one chunk alone holds more than max_points values
    "no_finite_values",  # only NaN / inf
    "unreadable",  # the file or the dataset cannot be read
    "render_error",  # Pillow failed
)


class ThumbnailError(Exception):
    """No picture for this file; ``reason`` is a metric label, ``str()`` says why in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Axis:
    """One axis of the plot: its name, unit and first/last value as text (or empty)."""

    name: str
    units: str = ""
    first: str = ""
    last: str = ""
    values: np.ndarray[Any, Any] | None = None  # the sampled coordinates (1-D plots only)

    @property
    def label(self) -> str:
        return f"{self.name} [{self.units}]" if self.units else self.name


@dataclass(frozen=True)
class Plot:
    """What to draw: the signal dataset and one axis name (or ``None``) per dimension."""

    signal: h5py.Dataset
    axes: tuple[str | None, ...]
    group: h5py.Group | None

    @property
    def name(self) -> str:
        return str(self.signal.name).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Thumbnail:
    """The PNG, its caption and how many values were read from disk for it."""

    png: bytes
    caption: str
    values_read: int

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


# ---- finding the default plot -----------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def _nx_class(obj: Any) -> str:
    return _text(obj.attrs.get("NX_class", "")) if obj is not None else ""


def _axes_names(raw: Any) -> list[str]:
    """``@axes`` as names: an array of strings, or one string (``"x"``, old ``"x:y"``)."""
    if raw is None:
        return []
    if isinstance(raw, np.ndarray) and raw.size != 1:
        return [_text(v) for v in raw.reshape(-1)]
    text = _text(raw)
    for sep in (":", ","):
        if sep in text:
            return [part.strip() for part in text.split(sep)]
    return [text.strip()]


def _named_child(node: Any, attribute: str, kind: type[Any]) -> Any:
    """The member of ``node`` that its ``attribute`` names, if it is a ``kind``; else None."""
    name = node.attrs.get(attribute)
    child = node.get(_text(name)) if name is not None else None
    return child if isinstance(child, kind) else None


def _plot_of_group(group: h5py.Group) -> Plot | None:
    """The plot an NXdata group describes, or ``None`` without a usable ``@signal``."""
    signal = _named_child(group, "signal", h5py.Dataset)
    if signal is None:
        return None
    names = _axes_names(group.attrs.get("axes"))
    axes = tuple(None if n in ("", ".") else n for n in names)
    return Plot(signal, axes, group)


def _follow_default(h5: h5py.File) -> Plot | None:
    """Root ``@default`` → NXentry ``@default`` → … → NXdata; ``None`` where the chain breaks."""
    node: Any = h5
    for _ in range(MAX_DEFAULT_HOPS):
        child = _named_child(node, "default", h5py.Group)
        if child is None:
            return None
        if _nx_class(child) == "NXdata":
            return _plot_of_group(child)
        node = child
    return None


def _first_nxdata(h5: h5py.File) -> Plot | None:
    """The first NXdata with a usable ``@signal``, breadth first over hard links, bounded."""
    queue: list[h5py.Group] = [h5]
    visited = 0
    while queue and visited < MAX_GROUPS_VISITED:
        group = queue.pop(0)
        visited += 1
        if _nx_class(group) == "NXdata":
            plot = _plot_of_group(group)
            if plot is not None:
                return plot
        for name in group:
            # never follow soft or external links: they may leave the file or loop
            if isinstance(group.get(name, getlink=True), h5py.HardLink):
                child = group.get(name)
                if isinstance(child, h5py.Group):
                    queue.append(child)
    return None


def find_plot(h5: h5py.File, hint: str = "") -> Plot:
    """The plot: the schema's ``hint`` path, else the default plot, else the first NXdata."""
    if hint:
        obj = h5.get(hint)
        if isinstance(obj, h5py.Group):
            plot = _plot_of_group(obj)
            if plot is None:
                raise ThumbnailError("no_plot", f"schema thumbnail path {hint}: no @signal dataset")
            return plot
        if isinstance(obj, h5py.Dataset):
            parent = obj.parent
            named = _plot_of_group(parent) if _nx_class(parent) == "NXdata" else None
            if named is not None and named.signal.name == obj.name:
                return named
            return Plot(obj, (), None)
        raise ThumbnailError("no_plot", f"schema thumbnail path {hint}: not in the file")
    plot = _follow_default(h5) or _first_nxdata(h5)
    if plot is None:
        raise ThumbnailError(
            "no_plot", "no default plot (@default chain) and no NXdata group with a @signal"
        )
    return plot


# ---- reading a bounded sample -------------------------------------------------------------


def _storage_unit(ds: h5py.Dataset) -> tuple[int, ...]:
    """What one read fetches from disk per touched block: the chunk, or a sieve of a row."""
    if ds.chunks is not None:
        return tuple(int(c) for c in ds.chunks)
    row = max(1, SIEVE_BYTES // max(1, int(ds.dtype.itemsize)))
    last: int = min(row, int(ds.shape[-1]))
    return (1,) * (int(ds.ndim) - 1) + (last,)


def _steps(shape: Sequence[int], counts: Sequence[int]) -> list[int]:
    return [max(1, math.ceil(n / max(1, k))) for n, k in zip(shape, counts, strict=True)]


def _cost(shape: Sequence[int], unit: Sequence[int], steps: Sequence[int]) -> int:
    """Values HDF5 reads from disk for the strided slices: touched blocks times block size.

    Along one axis a step no larger than the block touches every block; a larger step touches
    one block per sample.
    """
    return math.prod(
        math.ceil(n / max(s, c)) * c for n, c, s in zip(shape, unit, steps, strict=True)
    )


def plan_read(ds: h5py.Dataset, targets: Sequence[int], max_points: int) -> tuple[list[int], int]:
    """Per-axis steps whose strided read costs at most ``max_points`` values; and that cost.

    Over budget, every axis that touches more than one block is thinned by the same factor (in
    blocks touched), so the picture keeps its proportions; an axis inside one block costs the
    same whatever its step, so it keeps its resolution.
    """
    shape = [int(n) for n in ds.shape]
    unit = _storage_unit(ds)
    counts = [min(n, t) for n, t in zip(shape, targets, strict=True)]
    while True:
        steps = _steps(shape, counts)
        cost = _cost(shape, unit, steps)
        if cost <= max_points:
            return steps, cost
        touched = [math.ceil(n / max(s, c)) for n, c, s in zip(shape, unit, steps, strict=True)]
        thinnable = [a for a, t in enumerate(touched) if t > 1]
        if not thinnable:
            raise ThumbnailError(
                "too_large",
                f"{ds.name}: one storage chunk {tuple(unit)} holds {math.prod(unit)} values, "
                f"more than ingestion.thumbnail.max_points ({max_points})",
            )
        factor = (max_points / cost) ** (1 / len(thinnable))
        for a in thinnable:
            counts[a] = max(1, int(touched[a] * factor))


def _targets(ndim: int) -> list[int]:
    if ndim == 1:
        return [LINE_POINTS]
    lead = ndim - 2
    per_lead = max(1, int(FRAMES_SUMMED ** (1 / lead))) if lead else 1
    return [per_lead] * lead + [IMAGE_SIDE, IMAGE_SIDE]


def read_sample(ds: h5py.Dataset, max_points: int) -> tuple[np.ndarray[Any, Any], list[int], int]:
    """A strided sample of ``ds`` as float64, its steps and the values read from disk."""
    if ds.dtype.kind not in "biuf":
        raise ThumbnailError("unsupported", f"{ds.name}: not numeric ({ds.dtype})")
    if ds.ndim == 0 or ds.size == 0:
        raise ThumbnailError("unsupported", f"{ds.name}: shape {ds.shape} has nothing to plot")
    steps, cost = plan_read(ds, _targets(ds.ndim), max_points)
    try:
        sample = ds[tuple(slice(None, None, s) for s in steps)]
    except (OSError, ValueError, TypeError) as err:
        raise ThumbnailError("unreadable", f"{ds.name}: cannot read: {err}") from err
    return np.asarray(sample, dtype=np.float64), steps, cost


# ---- axes ------------------------------------------------------------------------------


def _format(value: Any) -> str:
    if isinstance(value, (bytes, str, np.bytes_, np.str_)):
        text = _text(value)
        return text if len(text) <= 12 else text[:11] + "…"
    return f"{float(value):.4g}"


def _axis(plot: Plot, dim: int, length: int, step: int, full: bool) -> Axis:
    """Axis ``dim``: name and unit; first/last value (the outer edges of bin edges); the sampled
    values when ``full``."""
    name = plot.axes[dim] if dim < len(plot.axes) else None
    if name is None or plot.group is None:
        return Axis(name or f"dim {dim}", "", "0", str(length - 1))
    ds = plot.group.get(name)
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.shape[0] not in (length, length + 1):
        return Axis(name, "", "0", str(length - 1))
    units = _text(ds.attrs.get("units", ""))
    try:
        first, last = ds[0], ds[ds.shape[0] - 1]
        values = None
        if full and ds.dtype.kind in "biuf":
            values = np.asarray(ds[0:length:step], dtype=np.float64)
    except (OSError, ValueError, TypeError):
        return Axis(name, units, "0", str(length - 1))
    return Axis(name, units, _format(first), _format(last), values)


# ---- rendering ---------------------------------------------------------------------------

# viridis as a 6th-degree polynomial per channel (least-squares fit to matplotlib's viridis
# table, CC0; within 4.3/255 of it): no matplotlib needed for the colours.
_VIRIDIS = (
    (-5.43208, 4.75179, 6.20374, -4.59993, -0.32724, 0.10771, 0.27446),
    (4.64157, -13.74944, 14.15396, -5.75824, 0.21481, 1.39647, 0.00577),
    (26.27211, -65.32097, 56.6563, -19.29181, 0.09198, 1.38677, 0.33266),
)


@functools.cache
def _lut() -> np.ndarray[Any, Any]:
    t = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.polyval(c, t) for c in _VIRIDIS], axis=1)
    return np.asarray(np.clip(rgb * 255.0 + 0.5, 0, 255), dtype=np.uint8)


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=11)
    except (OSError, ImportError, TypeError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _log_scale(finite: np.ndarray[Any, Any]) -> bool:
    """All values ≥ 0 and the positive ones span at least ``LOG_DECADES`` decades."""
    positive = finite[finite > 0]
    if finite.min() < 0 or positive.size == 0:
        return False
    return bool(math.log10(positive.max() / positive.min()) >= LOG_DECADES)


def _scaled(values: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], float, float, bool]:
    """Values in [0, 1] (NaN where not finite), the range (log10 if log) and whether log."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ThumbnailError("no_finite_values", "the signal has no finite values (all NaN/inf)")
    log = _log_scale(finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        data = np.where(values > 0, np.log10(values), np.nan) if log else values
    shown = data[np.isfinite(data)]
    low, high = float(shown.min()), float(shown.max())
    span = high - low or 1.0
    with np.errstate(invalid="ignore"):
        unit = (data - low) / span
    # on a log scale, zero and below are the bottom of the scale, not missing (NaN stays grey)
    unit = np.where(np.isfinite(values) & ~np.isfinite(unit), 0.0, unit)
    return unit, low, high, log


def _text_at(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, anchor: str) -> None:
    draw.text(xy, text, fill=INK, font=_font(), anchor=anchor)


def _vertical_text(canvas: Image.Image, text: str, centre: tuple[int, int]) -> None:
    box = _font().getbbox(text)
    strip = Image.new("RGB", (int(box[2] - box[0]) + 2, int(box[3]) + 2), "white")
    ImageDraw.Draw(strip).text((-box[0] + 1, 1), text, fill=INK, font=_font())
    turned = strip.rotate(90, expand=True)
    canvas.paste(turned, (centre[0] - turned.width // 2, centre[1] - turned.height // 2))


def _range_label(value: float, log: bool) -> str:
    return f"{10**value:.3g}" if log else f"{value:.3g}"


def _frame(title: str, x: Axis, y_label: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    _text_at(draw, ((LEFT + right) / 2, TOP / 2), title, "mm")
    _text_at(draw, (LEFT, bottom + 4), x.first, "la")
    _text_at(draw, (right, bottom + 4), x.last, "ra")
    _text_at(draw, ((LEFT + right) / 2, HEIGHT - 6), x.label, "md")
    _vertical_text(canvas, y_label, (12, (TOP + bottom) // 2))
    return canvas, draw


def render_image(values: np.ndarray[Any, Any], title: str, y: Axis, x: Axis) -> bytes:
    """2-D: colour image (row 0 at the bottom), colour bar with its range, axis names."""
    unit, low, high, log = _scaled(values)
    index = np.clip(np.nan_to_num(unit, nan=0.0) * 255.0, 0, 255).astype(np.uint8)
    rgb = _lut()[index]
    rgb[~np.isfinite(unit)] = NAN_RGB
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    picture = Image.fromarray(np.ascontiguousarray(rgb[::-1])).resize(
        (right - LEFT, bottom - TOP), Image.Resampling.NEAREST
    )
    canvas, draw = _frame(title + (" (log)" if log else ""), x, y.label)
    canvas.paste(picture, (LEFT, TOP))
    draw.rectangle((LEFT - 1, TOP - 1, right, bottom), outline=INK)
    _text_at(draw, (LEFT - 3, bottom), y.first, "rb")
    _text_at(draw, (LEFT - 3, TOP), y.last, "rt")
    bar_x = right + 10
    ramp = _lut()[np.arange(255, -1, -1)][:, None, :].repeat(BAR_WIDTH, axis=1)
    canvas.paste(Image.fromarray(ramp).resize((BAR_WIDTH, bottom - TOP)), (bar_x, TOP))
    draw.rectangle((bar_x - 1, TOP - 1, bar_x + BAR_WIDTH, bottom), outline=INK)
    _text_at(draw, (bar_x + BAR_WIDTH + 3, TOP), _range_label(high, log), "lt")
    _text_at(draw, (bar_x + BAR_WIDTH + 3, bottom), _range_label(low, log), "lb")
    return _png(canvas)


def render_line(values: np.ndarray[Any, Any], title: str, x: Axis) -> bytes:
    """1-D: the signal against its axis (or index), log y when it spans decades; gaps at NaN."""
    unit, low, high, log = _scaled(values)
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    xs = x.values if x.values is not None and x.values.shape == values.shape else None
    if xs is None or not np.all(np.isfinite(xs)) or xs.max() == xs.min():
        xs = np.arange(values.size, dtype=np.float64)
    px = LEFT + (xs - xs.min()) / (xs.max() - xs.min() or 1.0) * (right - LEFT)
    py = bottom - unit * (bottom - TOP)
    canvas, draw = _frame(title + (" (log y)" if log else ""), x, title)
    draw.rectangle((LEFT - 1, TOP - 1, right, bottom), outline=INK)
    segment: list[tuple[float, float]] = []
    for cx, cy in zip(px.tolist(), py.tolist(), strict=True):
        if math.isfinite(cy):
            segment.append((cx, cy))
            continue
        _polyline(draw, segment)
        segment = []
    _polyline(draw, segment)
    _text_at(draw, (LEFT - 3, bottom), _range_label(low, log), "rb")
    _text_at(draw, (LEFT - 3, TOP), _range_label(high, log), "rt")
    return _png(canvas)


def _polyline(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]]) -> None:
    if len(points) == 1:
        cx, cy = points[0]
        draw.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=LINE_RGB)
    elif points:
        draw.line(points, fill=LINE_RGB, width=1)


@functools.cache
def _palette() -> Image.Image:
    """224 viridis steps, 29 greys (text edges), the NaN grey, the line blue and the ink."""
    steps = _lut()[np.linspace(0, 255, 224).round().astype(int)]
    greys = np.linspace(0, 255, 29).round().astype(int)
    colours = [tuple(int(v) for v in c) for c in steps] + [(g, g, g) for g in greys]
    colours += [NAN_RGB, LINE_RGB, INK]
    image = Image.new("P", (1, 1))
    image.putpalette([v for c in colours for v in c])
    return image


def _png(canvas: Image.Image) -> bytes:
    """A PNG in a fixed 256-colour palette: a third of the time of an RGB PNG (zlib has a third
    of the bytes to pack) and half its size; an adaptive palette would band the colour ramp."""
    out = io.BytesIO()
    canvas.quantize(palette=_palette(), dither=Image.Dither.NONE).save(out, format="PNG")
    return out.getvalue()


# ---- the whole picture -----------------------------------------------------------------


def make_thumbnail(h5: h5py.File, max_points: int, hint: str = "") -> Thumbnail:
    """The picture of ``h5``'s default plot (or ``hint``), reading at most ``max_points`` values.

    ≥ 3-D signals: the last two dimensions are drawn, summed over up to ``FRAMES_SUMMED`` evenly
    spaced frames of the leading ones (a sum shows where the counts are; a first frame is
    often empty). The caption says which frames.
    """
    plot = find_plot(h5, hint)
    values, steps, cost = read_sample(plot.signal, max_points)
    shape = [int(n) for n in plot.signal.shape]
    units = _text(plot.signal.attrs.get("units", ""))
    title = f"{plot.name} [{units}]" if units else plot.name
    axes = [_axis(plot, d, shape[d], steps[d], full=values.ndim == 1) for d in range(len(shape))]
    lead = max(values.ndim - 2, 0)
    named = [a.name for a in axes[lead:] if not a.name.startswith("dim ")]
    caption = plot.name + (" vs " + " and ".join(named) if named else "")
    if lead:
        frames, total = math.prod(values.shape[:lead]), math.prod(shape[:lead])
        leading = tuple(range(lead))
        empty = np.all(~np.isfinite(values), axis=leading)  # NaN stays NaN, not a zero sum
        values = np.where(empty, np.nan, np.nansum(values, axis=leading))
        over = " and ".join(a.name for a in axes[:lead])
        caption += f" (sum of {frames} of {total} frames over {over})"
        title += f", sum of {frames}/{total} frames"
    try:
        if values.ndim == 1:
            png = render_line(values, title, axes[0])
        else:
            png = render_image(values, title, axes[-2], axes[-1])
    except (ValueError, OSError, MemoryError) as err:
        raise ThumbnailError("render_error", f"rendering failed: {err}") from err
    return Thumbnail(png, caption, cost)


def thumbnail_of_file(path: Path | str, max_points: int, hint: str = "") -> Thumbnail:
    """Open ``path`` read-only (again: the metadata pass closed it) and make its thumbnail,
    in this thread's turn (``turns.TURNS``; the pipeline already holds it for the whole file)."""
    with TURNS.hold():
        try:
            h5 = h5py.File(path, "r")
        except OSError as err:
            raise ThumbnailError("unreadable", f"cannot open: {err}") from err
        try:
            return make_thumbnail(h5, max_points, hint)
        except (KeyError, OSError, RuntimeError) as err:  # h5py's ways of saying "cannot read"
            raise ThumbnailError("unreadable", f"cannot read: {err}") from err
        finally:
            h5.close()
