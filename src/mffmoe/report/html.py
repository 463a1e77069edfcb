"""The report as one self-contained HTML page: inline CSS, every picture a data: URI or inline SVG, no
script and no reference to anything outside the file, so it opens offline and prints (the PDF is
printed from it) exactly as it shows.

Sections follow the JSON report. Provenance is shown as found; when none was found the page says so
and no more: the absence of provenance is not evidence that a file is authentic.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from mffmoe.report.figures import face_thumbnails, frame_chart, overlays, safe_image_uri
from mffmoe.results import WHAT_A_MAP_IS

NO_PROVENANCE = ("No provenance found: the file carries no provenance information that could be read. "
                 "This says nothing about whether it is authentic.")
ASSESSMENT = {"likely_real": "Likely real", "uncertain": "Uncertain", "likely_fake": "Likely fake"}

CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:13px;color:#222;margin:24px auto;max-width:960px;
padding:0 16px;line-height:1.4}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;border-bottom:1px solid #ccc;padding-bottom:3px;margin:22px 0 8px}
table{border-collapse:collapse;margin:4px 0 8px;width:100%}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f3f3f3;font-weight:600;width:28%}
table.grid th{width:auto}code,.mono{font-family:"DejaVu Sans Mono",monospace;font-size:11px;word-break:break-all}
.verdict{border-radius:6px;padding:12px 16px;margin:12px 0;border:2px solid}
.verdict.FAKE{background:#fdecea;border-color:#d62728}.verdict.REAL{background:#eaf6ec;border-color:#2ca02c}
.verdict .label{font-size:26px;font-weight:700}.warn{background:#fff4d6;border:1px solid #e0b000;padding:6px 10px;
border-radius:4px;margin:6px 0}.muted{color:#666}figure{margin:8px 0 14px;break-inside:avoid;page-break-inside:avoid}
figure img{max-width:100%;border:1px solid #ccc}figcaption{font-size:12px;color:#444}
img.thumb{width:64px;height:64px;object-fit:cover;border:1px solid #ccc}svg.chart{max-width:100%;height:auto}
section{break-inside:auto}tr{break-inside:avoid;page-break-inside:avoid}
@page{size:A4;margin:14mm}@media print{body{margin:0;max-width:none}}
"""


def _text(value: Any) -> str:
    """A value as readable text: numbers rounded for people, structures as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _kv(rows: Iterable[tuple[str, Any]], mono: Iterable[str] = ()) -> str:
    """A two-column table; the values of keys in `mono` in a fixed-width font (hashes, paths)."""
    fixed = set(mono)
    out = ["<table>"]
    for key, value in rows:
        cell = escape(_text(value))
        if key in fixed or isinstance(value, dict | list):
            cell = f'<span class="mono">{cell}</span>'
        out.append(f"<tr><th>{escape(key)}</th><td>{cell}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _grid(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table whose cells are given as HTML (escaped by the caller)."""
    out = ['<table class="grid"><tr>', *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _score(value: Any) -> str:
    return "—" if value is None else f"{float(value):.4f}"


def _size(n: int) -> str:
    return f"{n:,} bytes" + (f" ({n / 1e6:.2f} MB)" if n >= 1e6 else f" ({n / 1e3:.1f} kB)" if n >= 1e3 else "")


def _verdict(report: Mapping[str, Any]) -> str:
    r = report["result"]
    pred = escape(str(r["prediction"]))
    lines = [f'<div class="verdict {pred}" id="verdict"><div class="label">{pred}</div>',
             f"<div>P(fake) <b>{_score(r['score'])}</b> · confidence {_score(r['confidence'])} · threshold "
             f"{_score(r['threshold'])}"]
    if r.get("calibrated_score") is not None:
        lines.append(f" · calibrated P(fake) {_score(r['calibrated_score'])}")
    if r.get("score_interval"):
        lo, hi = r["score_interval"]
        lines.append(f" · early exit after {r.get('experts_run')} experts, score in [{lo:.4f}, {hi:.4f}]")
    lines.append("</div>")
    a = r.get("agreement")
    if a:
        lines.append(f'<div id="assessment" data-assessment="{escape(a["assessment"])}">Assessment: '
                     f'<b>{escape(ASSESSMENT.get(a["assessment"], a["assessment"]))}</b>'
                     f' — experts: std {a["std"]:.3f}, range {a["min"]:.3f}–{a["max"]:.3f}, '
                     f'{a["fake_votes"]} of {a["fake_votes"] + a["real_votes"]} say fake'
                     + (f" ({escape(', '.join(a['reasons']))})" if a.get("reasons") else "") + "</div>")
    lines.append("</div>")
    if r.get("untrained") or report["model"].get("untrained"):
        lines.append('<div class="warn"><b>UNTRAINED</b>: random weights; this score means nothing.</div>')
    if r.get("in_scope") is False:
        why = ", ".join(r.get("scope_reasons") or []) or "no face found"
        lines.append(f'<div class="warn" id="scope">Out of scope ({escape(why)}): the model is known not to '
                     "handle such inputs; the score is given but should not be relied on.</div>")
    if r.get("note"):
        lines.append(f'<p class="muted">Note: {escape(str(r["note"]))}</p>')
    return "".join(lines)


def _details(report: Mapping[str, Any]) -> str:
    r, model = report["result"], report["model"]
    roster = model.get("roster") or []
    rows = [("scored", "face crops" if r.get("crop") == "faces" else "the whole frame"),
            ("in scope", "not checked (frame mode: face presence is not looked at)" if r.get("in_scope") is None
             else r.get("in_scope")), ("scope reasons", ", ".join(r.get("scope_reasons") or []) or "none")]
    cal = r.get("calibration")
    if cal:
        rows.append(("calibration", f"{cal.get('name')} — " + ("applied" if cal.get("applied")
                                                              else f"not applied: {cal.get('note')}")))
    else:
        rows.append(("calibration", "none next to the weights"))
    if r["media_type"] == "video":
        rows += [("frames analysed", r.get("frames_analyzed")), ("frames failed", r.get("frames_failed")),
                 ("pooling", r.get("pooling")),
                 ("metrics", "; ".join(f"{k} {_text(v)}" for k, v in sorted((r.get("metrics") or {}).items())))]
    experts = _grid(["expert", "P(fake)"], ([escape(str(name)), _score(s)] for name, s in
                                            zip(roster or range(len(r["expert_scores"])), r["expert_scores"],
                                                strict=False)))
    return _kv(rows) + "<h3>Experts</h3>" + experts


def _input(report: Mapping[str, Any]) -> str:
    i, r = report["input"], report["result"]
    rows = [("file", i["name"]), ("path", i["path"]), ("SHA-256", i["sha256"]), ("size", _size(int(i["size"]))),
            ("type", f"{i['media_type']} ({i.get('format') or 'format unknown'})")]
    dims = r.get("dimensions") or {}
    if dims:
        rows.append(("dimensions", f"{dims.get('width')} x {dims.get('height')} pixels"))
    if r["media_type"] == "video":
        rows += [("duration", f"{float(r['duration']):.2f} s" if r.get("duration") else None),
                 ("frame rate", r.get("fps")), ("frames in stream", r.get("frame_count"))]
    return _kv(rows, mono=("SHA-256", "path"))


def _provenance(report: Mapping[str, Any]) -> str:
    found = report.get("provenance")
    if not found:
        return f'<p id="no-provenance">{escape(NO_PROVENANCE)}</p>'
    return _kv(((str(k), v) for k, v in found.items()))


def _faces(report: Mapping[str, Any], media: str | os.PathLike[str] | None) -> str:
    r = report["result"]
    faces = r.get("faces") or []
    if not faces:
        return ""
    thumbs = face_thumbnails(r, media) if media is not None else [None] * len(faces)
    rows = []
    for n, (face, thumb) in enumerate(zip(faces, thumbs, strict=True)):
        img = f'<img class="thumb" alt="face {n}" src="{thumb}">' if thumb else "—"
        rows.append([img, str(n), escape(face["prediction"]), _score(face["score"]),
                     _score(face.get("calibrated_score")), _score(face["detector_score"]),
                     escape(_text([round(v) for v in face["box"]]))])
    return "<h2 id=\"faces\">Faces</h2>" + _grid(
        ["", "face", "label", "P(fake)", "calibrated", "face detector", "box (px)"], rows)


def _persons(report: Mapping[str, Any]) -> str:
    persons = report["result"].get("persons") or []
    if not persons:
        return ""
    rows = []
    for p in persons:
        uri = safe_image_uri(p.get("thumbnail"))
        img = f'<img class="thumb" alt="person {int(p["person"])}" src="{uri}">' if uri else "—"
        rows.append([img, str(int(p["person"])), escape(p["prediction"]), _score(p["score"]),
                     _score(p.get("calibrated_score")), str(int(p["frames"])), "yes" if p["counted"] else "no"])
    return "<h2 id=\"persons\">Persons</h2>" + _grid(
        ["", "person", "label", "P(fake)", "calibrated", "frames seen", "counted"], rows)


def _frames(report: Mapping[str, Any]) -> str:
    r = report["result"]
    chart = frame_chart(r)
    if chart is None:
        return ""
    failed = r.get("failed_frames") or []
    extra = ""
    if failed:
        extra = "<h3>Frames that failed</h3>" + _grid(
            ["frame", "time (s)", "error"],
            ([str(int(f["frame_index"])), f"{float(f['timestamp']):.2f}", escape(str(f["error"]))] for f in failed))
    lines = "one line per person" if r.get("persons") else "P(fake) of each sampled frame"
    return (f'<h2 id="frames">Per-frame scores</h2><figure>{chart}<figcaption>{lines}; dots: red FAKE, green '
            f"REAL; dashed: the threshold.</figcaption></figure>{extra}")


def _heatmaps(report: Mapping[str, Any], media: str | os.PathLike[str] | None) -> str:
    r = report["result"]
    explanation = r.get("explanation")
    if not explanation:
        return ""
    figures, why = overlays(r, media) if media is not None else \
        ([], "The maps could not be drawn: the input file is not available (or not the one analysed).")
    head = (f'<h2 id="heatmaps">Where the experts look</h2><p id="what-a-map-is"><b>{escape(WHAT_A_MAP_IS)}</b></p>'
            f'<p class="muted">Method: {escape(str(explanation.get("method")))} '
            f'({escape(str(explanation.get("method_reason")))}).</p>')
    if why:
        return head + f"<p>{escape(why)}</p>"
    body = "".join(f'<figure><img alt="{escape(f.caption, quote=True)}" src="{f.uri}"><figcaption>'
                   f"{escape(f.caption)}</figcaption></figure>" for f in figures)
    return head + (body or "<p>No item was explained.</p>")


def _model(report: Mapping[str, Any]) -> str:
    m = report["model"]
    rows = [("model", m.get("name")), ("experts", ", ".join(m.get("roster") or [])),
            ("input size", m.get("input_size")), ("weights", m.get("source")), ("layout", m.get("layout")),
            ("EMA weights", m.get("ema")), ("EMA updates", m.get("ema_num_updates")),
            ("fingerprint", (m.get("weights") or {}).get("fingerprint"))]
    files = (m.get("weights") or {}).get("files") or {}
    table = _grid(["role", "file", "size", "SHA-256"],
                  ([escape(role), escape(f["name"]), _size(int(f["bytes"])), f'<span class="mono">'
                    f'{escape(f["sha256"])}</span>'] for role, f in files.items())) if files else \
        "<p>No weight files (random weights).</p>"
    return _kv(rows, mono=("weights", "fingerprint")) + table


def _signature(report: Mapping[str, Any]) -> str:
    sig = report.get("signature")
    if not sig:
        return "<p>The JSON report is not signed.</p>"
    return (_kv([("algorithm", sig.get("algorithm")), ("key id", sig.get("key_id")),
                 ("public key", sig.get("public_key")), ("covers", sig.get("signed")),
                 ("SHA-256 of the signed content", sig.get("sha256"))], mono=("public key", "key id",
                                                                           "SHA-256 of the signed content"))
            + "<p class=\"muted\">The signature belongs to the JSON report; check it with "
            "<code>mffmoe report verify REPORT.json --input FILE --key PUB</code>.</p>")


def render_html(report: Mapping[str, Any], media: str | os.PathLike[str] | None = None) -> str:
    """The page for `report`. `media` is the analysed file, read again to draw the heatmaps and the
    image's face thumbnails (default: the report's input path, when it is still there)."""
    if media is None:
        media = Path(report["input"]["path"])
    try:  # a different file would put the maps on the wrong picture: the size must be the report's
        if os.path.getsize(media) != int(report["input"]["size"]):
            media = None
    except OSError:
        media = None
    r, name = report["result"], str(report["input"]["name"])
    times = [("report created", report.get("created")), ("processing time", f"{float(r['processing_time']):.3f} s")]
    if r.get("explanation"):
        times.append(("explanation time", f"{float(r['explanation']['seconds']):.3f} s"))
    body = [f"<h1>mffmoe report: {escape(name)}</h1>",
            f'<p class="muted">{escape(str(report.get("format")))} · created {escape(str(report.get("created")))}</p>',
            _verdict(report),
            '<h2 id="input">Input</h2>', _input(report),
            '<h2 id="provenance">Provenance</h2>', _provenance(report),
            '<h2 id="result">Result</h2>', _details(report),
            _faces(report, media), _persons(report), _frames(report), _heatmaps(report, media),
            '<h2 id="model">Model and weights</h2>', _model(report),
            '<h2 id="engine">Engine</h2>', _kv(sorted(report.get("engine", {}).items())),
            '<h2 id="settings">Settings</h2>', _kv(sorted(report.get("settings", {}).items()), mono=("weights",)),
            '<h2 id="software">Software</h2>', _kv(sorted(report.get("software", {}).items())),
            '<h2 id="times">Timestamps</h2>', _kv(times),
            '<h2 id="signature">Signature</h2>', _signature(report)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>mffmoe report: {escape(name)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
