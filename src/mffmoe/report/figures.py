"""The report's pictures, each ready to inline: heatmap overlays and face thumbnails as data: URIs, the
per-frame score chart as SVG. Inline so that a report is one file that opens anywhere, offline, and
asks nothing of any server."""
from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
from PIL import Image

from mffmoe.errors import MFFMoEError

#: Longest side of an inlined overlay (pixels): enough to see the map, small enough for a page.
OVERLAY_SIDE = 720
THUMB_SIDE = 96


@dataclass(frozen=True)
class Figure:
    """One inlined picture and what it shows."""
    uri: str
    caption: str


def data_uri(picture: Image.Image, fmt: str = "JPEG", side: int | None = None) -> str:
    """`picture` (shrunk to `side` on its longest edge) as a data: URI."""
    if side is not None and max(picture.size) > side:
        scale = side / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "JPEG":
        picture.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
    else:
        picture.save(buf, format=fmt, optimize=True)
    mime = "image/jpeg" if fmt == "JPEG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _pictures(path: str | os.PathLike[str], media_type: str, frames: Sequence[int]) -> dict[int | None, np.ndarray]:
    """The original pixels: the image (key None) or the video frames asked for (by frame number)."""
    if media_type == "image":
        from mffmoe.media.image import load_image

        return {None: np.asarray(load_image(path))}
    from mffmoe.media.video import VideoSampler

    wanted = sorted(set(frames))
    out: dict[int | None, np.ndarray] = {}
    if not wanted:
        return out
    with VideoSampler(path, len(wanted)) as sampler:
        sampler.indices = wanted
        for sample in sampler:
            if sample.frame_index in wanted and sample.image is not None:
                out[sample.frame_index] = sample.image
    return out


def overlays(result: Mapping[str, Any], path: str | os.PathLike[str]) -> tuple[list[Figure], str | None]:
    """The explanation's maps drawn over the original picture (`mffmoe.explain.overlay`), one per
    explained item; and why there are none when the picture cannot be read again."""
    explanation = result.get("explanation")
    if not explanation or not explanation.get("items"):
        return [], None
    from mffmoe.explain.overlay import render
    from mffmoe.explain.placement import Placement, full_size_map

    items = explanation["items"]
    try:
        pictures = _pictures(path, result["media_type"], [it["frame_index"] for it in items
                                                          if it.get("frame_index") is not None])
    except (MFFMoEError, OSError) as e:
        return [], f"The maps could not be drawn: the input could not be read again ({e})."
    figures = []
    for it in items:
        rgb = pictures.get(it.get("frame_index"))
        if rgb is None:
            continue
        h, w = rgb.shape[:2]
        if (w, h) != (explanation.get("width"), explanation.get("height")):
            return [], (f"The maps could not be drawn: the input is {w}x{h}, the explanation is of a "
                        f"{explanation.get('width')}x{explanation.get('height')} picture")
        box = tuple(int(v) for v in it["box"])
        where = [f"face {it['face']}"] if it.get("face") is not None else []
        if it.get("frame_index") is not None:
            where.append(f"frame {it['frame_index']} ({it['timestamp']:.2f} s)")
        title = f"P(fake) {it['score']:.3f} | {it['method']} | {', '.join(where) or 'frame'}"
        full = full_size_map(it["map"], Placement((box[0], box[1], box[2], box[3]), w, h))
        peak = (int(it["peak"][0]), int(it["peak"][1])) if it.get("peak") else None
        outline = None if it["kind"] == "frame" else (box[0], box[1], box[2], box[3])
        picture = render(rgb, full, title=title, box=outline, peak=peak)
        figures.append(Figure(data_uri(picture, "JPEG", OVERLAY_SIDE), title))
    return figures, None


def face_thumbnails(result: Mapping[str, Any], path: str | os.PathLike[str]) -> list[str | None]:
    """An image's scored faces as thumbnails cut from the picture by their crop square (videos carry
    their persons' thumbnails already); None for each when the picture cannot be read."""
    faces = result.get("faces") or []
    if not faces or result.get("media_type") != "image":
        return [None] * len(faces)
    from mffmoe.faces.crops import cut_padded

    try:
        rgb = _pictures(path, "image", [])[None]
    except (MFFMoEError, OSError):
        return [None] * len(faces)
    out: list[str | None] = []
    for face in faces:
        left, top, right, bottom = (int(v) for v in face["crop_box"])
        out.append(data_uri(Image.fromarray(cut_padded(rgb, (left, top, right, bottom))), "JPEG", THUMB_SIDE)
                   if right > left and bottom > top else None)
    return out


_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e")


def frame_chart(result: Mapping[str, Any], width: int = 720, height: int = 240) -> str | None:
    """A video's per-frame P(fake) over time with the threshold line (and one line per person in faces
    mode), as inline SVG; None for images or videos without scored frames."""
    frames = result.get("frame_predictions") or []
    if result.get("media_type") != "video" or not frames:
        return None
    left, right, top, bottom = 48, 12, 14, 34
    pw, ph = width - left - right, height - top - bottom
    t_end = max([float(f["timestamp"]) for f in frames] + [float(result.get("duration") or 0.0), 1e-6])

    def xy(t: float, s: float) -> str:
        return f"{left + pw * t / t_end:.1f},{top + ph * (1.0 - s):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="P(fake) per sampled frame over time">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>']
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + ph * (1.0 - s)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{s:.2f}</text>')
    for k in range(6):
        t = t_end * k / 5
        parts.append(f'<text x="{left + pw * k / 5:.1f}" y="{top + ph + 16}" text-anchor="middle" '
                     f'font-size="11">{t:.1f}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 3}" text-anchor="middle" font-size="11">'
                 'time (s)</text>')
    threshold = float(result.get("threshold", 0.5))
    ty = top + ph * (1.0 - threshold)
    parts.append(f'<line class="threshold" x1="{left}" y1="{ty:.1f}" x2="{left + pw}" y2="{ty:.1f}" '
                 f'stroke="#d62728" stroke-dasharray="6,4"/>')
    parts.append(f'<text x="{left + pw - 4}" y="{ty - 4:.1f}" text-anchor="end" font-size="11" fill="#d62728">'
                 f'threshold {threshold:.2f}</text>')
    persons = result.get("persons") or []
    if persons:
        for i, person in enumerate(persons):
            points = " ".join(xy(float(p["timestamp"]), float(p["score"])) for p in person["timeline"])
            colour = _COLOURS[i % len(_COLOURS)]
            parts.append(f'<polyline class="person" fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{points}"><title>person {int(person["person"])}</title></polyline>')
    else:
        points = " ".join(xy(float(f["timestamp"]), float(f["score"])) for f in frames)
        parts.append(f'<polyline class="frames" fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>')
    for f in frames:
        cx, cy = xy(float(f["timestamp"]), float(f["score"])).split(",")
        fill = "#d62728" if f["prediction"] == "FAKE" else "#2ca02c"
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{fill}"><title>frame {int(f["frame_index"])}, '
                     f'{float(f["timestamp"]):.2f} s: {float(f["score"]):.3f}</title></circle>')
    parts.append(f'<text x="12" y="{top + ph / 2}" font-size="11" transform="rotate(-90 12 {top + ph / 2})" '
                 'text-anchor="middle">P(fake)</text>')
    parts.append("</svg>")
    return "".join(parts)


def safe_image_uri(value: Any) -> str | None:
    """A result's data: URI when it is one of an image (anything else is not inlined)."""
    text = str(value or "")
    return escape(text, quote=True) if text.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) \
        else None
