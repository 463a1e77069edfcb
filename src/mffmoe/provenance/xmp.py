"""XMP packets (JPEG APP1, PNG iTXt, WebP, TIFF tag 700, or found in the bytes of other files): IPTC
`Iptc4xmpExt:DigitalSourceType`, CreatorTool and other generator hints.

XMP is XML from an untrusted file, so it is parsed with the standard library's expat after refusing any
DOCTYPE (no entity declarations, so no entity expansion and no external entities: what defusedxml's
`forbid_dtd` does, without the dependency), and only up to `MAX_PACKET_BYTES`.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from mffmoe.provenance.findings import Findings

MAX_PACKET_BYTES = 4 * 1024 * 1024   # an XMP packet larger than this is refused (JPEG's own limit is 64 KB)
MAX_PROPERTIES = 200                 # properties kept from one packet
SCAN_BYTES = 4 * 1024 * 1024         # head and tail of a file searched for a packet when no parser has one

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PREFIXES = {
    "http://ns.adobe.com/xap/1.0/": "xmp",
    "http://purl.org/dc/elements/1.1/": "dc",
    "http://iptc.org/std/Iptc4xmpExt/2008-02-29/": "Iptc4xmpExt",
    "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/": "Iptc4xmpCore",
    "http://ns.adobe.com/photoshop/1.0/": "photoshop",
    "http://ns.adobe.com/tiff/1.0/": "tiff",
    "http://ns.adobe.com/exif/1.0/": "exif",
    "http://ns.adobe.com/exif/1.0/aux/": "aux",
    "http://ns.adobe.com/xap/1.0/mm/": "xmpMM",
    "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#": "stEvt",
    "http://ns.adobe.com/xap/1.0/rights/": "xmpRights",
    "http://ns.adobe.com/camera-raw-settings/1.0/": "crs",
    "http://ns.google.com/photos/1.0/camera/": "GCamera",
    "http://ns.useplus.org/ldf/xmp/1.0/": "plus",
}
# Properties checked for an AI generator's name (tool fields and credit lines, not free captions).
HINT_FIELDS = {"xmp:CreatorTool", "tiff:Software", "photoshop:Credit", "xmpMM:History", "dc:creator",
               "photoshop:Source", "Iptc4xmpCore:CreatorContactInfo", "plus:DataMining"}
SOURCE_TYPE_FIELDS = {"Iptc4xmpExt:DigitalSourceType"}
_PACKET = re.compile(rb"<x:xmpmeta[\s>].*?</x:xmpmeta>", re.DOTALL)
_DOCTYPE = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def read_xmp(packet: bytes | str) -> Findings:
    """Properties of one XMP packet, with DigitalSourceType claims and generator hints."""
    found = Findings("xmp")
    data = packet.encode("utf-8", "replace") if isinstance(packet, str) else bytes(packet)
    data = data.strip(b"\x00 \r\n\t")
    if len(data) > MAX_PACKET_BYTES:
        found.error(f"XMP packet of {len(data)} bytes refused (limit {MAX_PACKET_BYTES})")
        return found
    if _DOCTYPE.search(data):
        found.error("XMP packet refused: it declares a DOCTYPE or entities (never legitimate in XMP)")
        return found
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        start = data.find(b"<rdf:RDF")
    if start > 0:  # drop the <?xpacket begin=...?> processing instruction and anything before it
        end = max(data.rfind(b"</x:xmpmeta>") + len(b"</x:xmpmeta>"), data.rfind(b"</rdf:RDF>") + len(b"</rdf:RDF>"))
        data = data[start:end] if end > start else data[start:]
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        found.error(f"XMP packet ({len(data)} bytes) is not well-formed XML: {e}")
        return found
    for desc in root.iter(f"{{{RDF}}}Description"):
        for key, value in desc.attrib.items():
            if not key.startswith(f"{{{RDF}}}"):
                _add(found, _name(key), value)
        for child in desc:
            if child.tag.startswith(f"{{{RDF}}}"):
                continue
            _add(found, _name(child.tag), _value(child))
        if len(found.fields) >= MAX_PROPERTIES:
            found.notes.append(f"XMP: only the first {MAX_PROPERTIES} properties were kept")
            break
    return found


def find_packet(path: str | os.PathLike[str]) -> bytes | None:
    """An XMP packet anywhere in the first or last `SCAN_BYTES` of a file (MP4 `uuid`/`XMP_` boxes, HEIF,
    formats Pillow does not read). Bounded: never reads more than twice `SCAN_BYTES`."""
    with open(path, "rb") as f:
        head = f.read(SCAN_BYTES)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        tail = b""
        if size > SCAN_BYTES:
            f.seek(max(SCAN_BYTES, size - SCAN_BYTES))
            tail = f.read(SCAN_BYTES)
    for chunk in (head, tail):
        if (m := _PACKET.search(chunk)) is not None:
            return m.group(0)
    return None


def _name(tag: str) -> str:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        prefix = PREFIXES.get(uri)
        return f"{prefix}:{local}" if prefix else f"{{{uri}}}{local}"
    return tag


def _value(elem: ET.Element) -> str:
    """A property's value: its text, an rdf:resource, or the texts and attributes of an rdf:Alt/Seq/Bag or
    a structure, joined."""
    if (text := (elem.text or "").strip()) and len(elem) == 0:
        return text
    if (res := elem.get(f"{{{RDF}}}resource")) is not None:
        return res
    parts: list[str] = []
    for sub in elem.iter():
        if sub is elem:
            continue
        for key, value in sub.attrib.items():
            if not key.startswith(f"{{{RDF}}}") and not key.startswith("{http://www.w3.org/XML/1998/namespace}"):
                parts.append(f"{_name(key).split(':')[-1]}={value}")
        if (t := (sub.text or "").strip()) and not sub.tag.startswith(f"{{{RDF}}}Seq"):
            tag = _name(sub.tag)
            parts.append(t if tag.startswith("{") or tag == "rdf:li" or sub.tag == f"{{{RDF}}}li"
                         else f"{tag.split(':')[-1]}={t}")
    return "; ".join(parts)


def _add(found: Findings, name: str, value: str) -> None:
    found.add(name, value, hint=name in HINT_FIELDS, source_type=name in SOURCE_TYPE_FIELDS)
