"""`read_provenance(path)`: every metadata source of one file, by content type, merged into a `Provenance`.

Metadata only: PNG chunks are walked and skipped, JPEG/WebP/TIFF headers are parsed by Pillow without
decoding pixels, videos are probed by PyAV without decoding frames, and each block is size-limited, so
memory stays bounded whatever the file. Each reader's failure becomes an entry in `errors`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from PIL import ImageFile

from mffmoe.errors import UnsupportedMediaError
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.provenance.c2pa import read_c2pa
from mffmoe.provenance.exif import read_exif_bytes, read_exif_image
from mffmoe.provenance.findings import Findings
from mffmoe.provenance.iptc import read_iptc
from mffmoe.provenance.png import PNG_SIGNATURE, read_png
from mffmoe.provenance.schema import AIClaim, Provenance, Source
from mffmoe.provenance.video import read_container
from mffmoe.provenance.xmp import find_packet, read_xmp

_ORDER: list[Source] = ["c2pa", "exif", "xmp", "iptc", "png_text", "container", "file"]


def read_provenance(path: str | os.PathLike[str], *, kind: MediaKind | None = None, c2pa: bool = True,
                    c2pa_trust_anchors: str | None = None) -> Provenance:
    """What the file's metadata says about its origin, with the source of each piece.

    `kind` skips the content probe when the caller has already made it; `c2pa=False` skips C2PA (noted);
    `c2pa_trust_anchors`: PEM root certificates C2PA signatures are checked against (none by default: a
    valid signature then reads `signingCredential.untrusted`). Raises only what `probe_kind` raises for
    a missing, empty or unreadable file; anything wrong inside the metadata is an entry in `errors`.
    """
    path = Path(path)
    media_kind: str
    try:
        media_kind = str(kind or probe_kind(path))
    except UnsupportedMediaError:
        media_kind = "unknown"
    parts: list[Findings] = []
    if media_kind == MediaKind.IMAGE:
        parts += _guard("file", lambda: _image(path))
    elif media_kind == MediaKind.VIDEO:
        parts += _guard("container", lambda: [read_container(path)])
        parts += _guard("xmp", lambda: _scanned_xmp(path))
    else:
        parts += _guard("xmp", lambda: _scanned_xmp(path))
    c2pa_status = "not_checked"
    c2pa_info = None
    if c2pa:
        result = read_c2pa(path, c2pa_trust_anchors)
        c2pa_status, c2pa_info = result.status, result.info
        parts.append(result.found)
    else:
        skipped = Findings("c2pa")
        skipped.notes.append("C2PA not checked (turned off)")
        parts.append(skipped)
    return _merge(str(path), media_kind, parts, c2pa_status, c2pa_info)


def _guard(source: Source, read: Callable[[], list[Findings]]) -> list[Findings]:
    """A reader's unexpected failure is an error entry: metadata never sinks an analysis."""
    try:
        return read()
    except Exception as e:
        failed = Findings(source)
        failed.error(f"metadata unreadable: {type(e).__name__}: {e}")
        return [failed]


def _image(path: Path) -> list[Findings]:
    with open(path, "rb") as f:
        head = f.read(8)
    if head == PNG_SIGNATURE:
        chunks = read_png(path)
        parts = [chunks.text]
        if chunks.exif:
            parts.append(read_exif_bytes(chunks.exif))
        if chunks.xmp:
            parts.append(read_xmp(chunks.xmp))
        return parts
    parts = []
    xmp: bytes | str | None = None
    try:
        with _open_header(path) as im:  # lazy: headers and APPn segments only, no pixels
            parts += [read_exif_image(im), read_iptc(im)]
            raw = im.info.get("xmp")
            xmp = raw if isinstance(raw, bytes | str) and raw else None
    except Exception as e:  # a format Pillow does not read (HEIF without a plugin), or a broken header
        failed = Findings("exif")
        failed.notes.append(f"EXIF not read: Pillow cannot open the header ({type(e).__name__}: {e})")
        parts.append(failed)
    if xmp is not None:
        parts.append(read_xmp(xmp))
    else:
        parts += _scanned_xmp(path)
    return parts


def _open_header(path: Path) -> ImageFile.ImageFile:
    """Pillow's lazy open, also for images over its decompression-bomb cap: those are analysed in strips
    (media/strips.py) and their metadata matters as much; only the header is parsed here, never pixels."""
    from PIL import Image
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        pass
    with open(path, "rb") as f:
        prefix = f.read(16)
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(prefix):
            continue
        try:
            # A path (typed as IO by Pillow's stubs): the image then owns and closes its file.
            return factory(cast(Any, str(path)), str(path))
        except (SyntaxError, IndexError, TypeError, ValueError, OSError):
            continue
    raise OSError("no Pillow plugin reads this header")


def _scanned_xmp(path: Path) -> list[Findings]:
    packet = find_packet(path)
    return [read_xmp(packet)] if packet is not None else []


def _merge(path: str, media_kind: str, parts: list[Findings], c2pa_status: str, c2pa_info: object) -> Provenance:
    parts = sorted(parts, key=lambda p: _ORDER.index(p.source))
    prov = Provenance.model_validate({
        "path": path, "media_kind": media_kind, "found": False, "summary": "", "claims_ai": False,
        "c2pa_status": c2pa_status, "c2pa": c2pa_info})
    seen: set[tuple[str, str, str]] = set()
    for part in parts:
        prov.evidence += part.evidence
        prov.errors += part.errors
        prov.notes += part.notes
        for claim in part.claims:
            if (key := (claim.source, claim.field, claim.value)) not in seen:
                seen.add(key)
                prov.ai_claims.append(claim)
        if part.source in ("exif", "xmp", "iptc", "png_text", "container"):
            getattr(prov, part.source).update(part.fields)
    prov.found = bool(prov.evidence) or c2pa_status == "found"
    prov.claims_ai = bool(prov.ai_claims)
    prov.summary = _summary(prov)
    return prov


def _summary(p: Provenance) -> str:
    signed = ""
    if p.c2pa is not None:
        state = p.c2pa.validation_state or "unknown"
        codes = f", {', '.join(p.c2pa.validation_codes)}" if p.c2pa.validation_codes else ""
        signed = f"signed by {p.c2pa.signer or 'an unnamed signer'} (validation {state}{codes})"
    if p.claims_ai:
        parts = [_claim_text(c, signed) for c in _ranked(p.ai_claims)[:3]]
        more = f"; {len(p.ai_claims) - 3} more" if len(p.ai_claims) > 3 else ""
        return f"metadata claims AI generation ({'; '.join(parts)}{more})"
    if not p.found:
        extra = []
        if p.errors:
            extra.append(f"{len(p.errors)} unreadable metadata block{'s' if len(p.errors) > 1 else ''}")
        if p.c2pa_status == "not_checked":
            extra.append("C2PA not checked")
        return "no provenance found" + (f" ({'; '.join(extra)})" if extra else "")
    said = []
    if p.c2pa is not None:
        said.append(f"C2PA manifest from {p.c2pa.claim_generator or 'an unnamed generator'}, {signed}")
    camera = " ".join(v for k in ("Make", "Model") if (v := p.exif.get(k)))
    if camera:
        said.append(f"EXIF camera {camera}")
    elif p.exif:
        said.append("EXIF")
    for source, label in (("xmp", "XMP"), ("iptc", "IPTC"), ("png_text", "PNG text"), ("container", "container tags")):
        if any(e.source == source for e in p.evidence):
            said.append(label)
    return f"provenance found ({'; '.join(said)}); no AI-generation claim"


def _ranked(claims: list[AIClaim]) -> list[AIClaim]:
    order = {"ai_generated": 0, "ai_composite": 1, "synthetic": 2, "generator_hint": 3}
    return sorted(claims, key=lambda c: (order[c.kind], _ORDER.index(c.source)))


def _claim_text(c: AIClaim, signed: str) -> str:
    return f"{c.description}, {signed}" if c.source == "c2pa" and signed else c.description
