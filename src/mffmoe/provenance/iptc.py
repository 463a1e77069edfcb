"""IPTC-IIM (the Photoshop APP13 block of JPEGs, TIFF tag 33723): by-line, credit, source, originating
program. IIM has no digital source type (that is XMP's Iptc4xmpExt:DigitalSourceType); its credit and
program fields still carry generator names ("Made with Google AI", a generator as originating program).
"""
from __future__ import annotations

from PIL import ImageFile, IptcImagePlugin

from mffmoe.provenance.findings import Findings

# (record, dataset) -> (name, check for a generator name)
_FIELDS = {(2, 80): ("By-line", True), (2, 110): ("Credit", True), (2, 115): ("Source", True),
           (2, 116): ("CopyrightNotice", False), (2, 120): ("Caption", False), (2, 65): ("OriginatingProgram", True),
           (2, 70): ("ProgramVersion", False), (2, 55): ("DateCreated", False), (2, 60): ("TimeCreated", False)}


def read_iptc(image: ImageFile.ImageFile) -> Findings:
    found = Findings("iptc")
    if image.format not in ("JPEG", "TIFF"):
        return found
    try:
        info = IptcImagePlugin.getiptcinfo(image)
    except Exception as e:  # a corrupt APP13 block
        found.error(f"IPTC-IIM block unreadable: {type(e).__name__}: {e}")
        return found
    for key, (name, hint) in _FIELDS.items():
        value = (info or {}).get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        text = "; ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
        found.add(name, text, hint=hint)
    return found
