"""EXIF (Pillow): camera make and model, capture time, software, GPS present or not.

GPS coordinates are not copied into reports (privacy); only whether the file has them. Values are read from
the EXIF block alone: nothing here decodes pixels.
"""
from __future__ import annotations

from typing import Any

from PIL import ExifTags, Image

from mffmoe.provenance.findings import Findings
from mffmoe.provenance.hints import parameters_claim

# (tag id, name, check for a generator name)
_BASE_TAGS = [(0x010F, "Make", False), (0x0110, "Model", False), (0x0131, "Software", True),
              (0x0132, "DateTime", False), (0x013B, "Artist", True), (0x010E, "ImageDescription", True),
              (0x8298, "Copyright", False), (0x9C9B, "XPTitle", True), (0x9C9C, "XPComment", True)]
_EXIF_TAGS = [(0x9003, "DateTimeOriginal", False), (0x9004, "DateTimeDigitized", False),
              (0x9011, "OffsetTimeOriginal", False), (0xA433, "LensMake", False), (0xA434, "LensModel", False),
              (0x9286, "UserComment", True), (0xA420, "ImageUniqueID", False)]


def read_exif_bytes(raw: bytes) -> Findings:
    """Parse an EXIF block (TIFF header, with or without the JPEG 'Exif\\0\\0' prefix)."""
    found = Findings("exif")
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception as e:  # Pillow raises SyntaxError, struct.error, ValueError... on corrupt blocks
        found.error(f"EXIF block ({len(raw)} bytes) unreadable: {type(e).__name__}: {e}")
        return found
    _read(exif, found)
    if not exif and len(raw) > 14:
        found.error(f"EXIF block ({len(raw)} bytes) has no readable entries")
    return found


def read_exif_image(image: Image.Image) -> Findings:
    """EXIF of an opened Pillow image: the raw block in `info` (JPEG, WebP, PNG) or the file's own IFD
    (TIFF)."""
    raw = image.info.get("exif")
    if isinstance(raw, bytes | bytearray) and raw:
        return read_exif_bytes(bytes(raw))
    found = Findings("exif")
    if image.format == "TIFF":
        try:
            _read(image.getexif(), found)
        except Exception as e:
            found.error(f"TIFF EXIF unreadable: {type(e).__name__}: {e}")
    return found


def _read(exif: Image.Exif, found: Findings) -> None:
    for tag, name, hint in _BASE_TAGS:
        _add(found, name, exif.get(tag), hint)
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception as e:
        found.error(f"EXIF sub-IFD unreadable: {type(e).__name__}: {e}")
        sub = {}
    for tag, name, hint in _EXIF_TAGS:
        _add(found, name, sub.get(tag), hint)
    if ExifTags.IFD.GPSInfo in exif:
        found.add("GPS", "present")
    elif exif:
        found.fields["GPS"] = "absent"


def _add(found: Findings, name: str, value: Any, hint: bool) -> None:
    text = _text(name, value)
    if text is None:
        return
    found.add(name, text, hint=hint)
    if hint and (claim := parameters_claim("exif", name, text)) is not None:
        found.claims.append(claim)


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        if name == "UserComment":  # 8-byte character code, then the text (EXIF 2.3, 4.6.5)
            code, body = value[:8], value[8:]
            enc = "utf-16-be" if code.startswith(b"UNICODE") else "utf-8"
            if code.startswith(b"UNICODE") and body[:2] in (b"\xff\xfe", b"\xfe\xff"):
                enc = "utf-16"
            return body.decode(enc, "replace").strip("\x00 ")
        if name.startswith("XP"):  # Windows XP tags: UTF-16-LE
            return value.decode("utf-16-le", "replace").strip("\x00 ")
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)
