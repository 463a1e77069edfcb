"""PNG text chunks (tEXt, zTXt, iTXt), the eXIf chunk and the XMP iTXt, read by walking the chunks.

Pillow only reads the chunks before the image data unless it decodes the pixels; this walk seeks past IDAT
instead, so text written after the image (some tools do) is read too, without decoding. Compressed text
is inflated to at most `MAX_TEXT_BYTES`, so a zlib bomb costs nothing. Generator hints: AUTOMATIC1111's
`parameters`, ComfyUI's `prompt` and `workflow`, InvokeAI's and NovelAI's keys, and Software.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field

from mffmoe.provenance.findings import Findings
from mffmoe.provenance.hints import parameters_claim, shorten
from mffmoe.provenance.schema import AIClaim

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 1024 * 1024      # one inflated text chunk
MAX_TEXT_CHUNKS = 256
XMP_KEYWORD = "XML:com.adobe.xmp"

# keyword -> generator: a chunk with this keyword is that tool's own record of how it made the image.
GENERATOR_KEYS = {
    "parameters": "Stable Diffusion web UI (AUTOMATIC1111 / Forge / SD.Next)",
    "prompt": "ComfyUI",
    "workflow": "ComfyUI",
    "invokeai_metadata": "InvokeAI",
    "invokeai_graph": "InvokeAI",
    "sd-metadata": "InvokeAI",
    "dream": "Stable Diffusion (lstein dream)",
    "fooocus_scheme": "Fooocus",
    "generation_data": "a Stable Diffusion front end",
}
HINT_KEYS = {"software", "comment", "description", "source", "title", "author", "generator", "creator"}


@dataclass
class PngChunks:
    """What the walk found: the text chunks, the eXIf block, the XMP packet, and whether a C2PA caBX
    chunk is there."""

    text: Findings = field(default_factory=lambda: Findings("png_text"))
    exif: bytes | None = None
    xmp: bytes | None = None
    has_c2pa: bool = False


def read_png(path: str | os.PathLike[str]) -> PngChunks:
    out = PngChunks()
    found = out.text
    n_text = 0
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            found.error("not a PNG file")
            return out
        while True:
            head = f.read(8)
            if len(head) < 8:
                if head:
                    found.error("PNG truncated inside a chunk header")
                break
            length, ctype = struct.unpack(">I4s", head)
            if length > 0x7FFFFFFF:
                found.error(f"PNG chunk {ctype!r} has an invalid length {length}")
                break
            if ctype in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"caBX") and length <= 64 * 1024 * 1024:
                data = f.read(length)
                f.seek(4, os.SEEK_CUR)  # CRC
                if len(data) < length:
                    found.error(f"PNG {ctype.decode()} chunk truncated")
                    break
                if ctype == b"eXIf":
                    out.exif = data
                elif ctype == b"caBX":
                    out.has_c2pa = True
                elif n_text < MAX_TEXT_CHUNKS:
                    n_text += 1
                    _text_chunk(ctype, data, out)
            else:
                f.seek(length + 4, os.SEEK_CUR)
            if ctype == b"IEND":
                break
    return out


def _text_chunk(ctype: bytes, data: bytes, out: PngChunks) -> None:
    found = out.text
    name = ctype.decode()
    key_raw, sep, rest = data.partition(b"\x00")
    if not sep or not 1 <= len(key_raw) <= 79:
        found.error(f"{name} chunk without a valid keyword")
        return
    key = key_raw.decode("latin-1")
    try:
        if ctype == b"tEXt":
            text = rest.decode("latin-1")
        elif ctype == b"zTXt":
            text = _inflate(rest[1:]).decode("latin-1")
        else:  # iTXt: compression flag, method, language tag \0, translated keyword \0, text (UTF-8)
            flag, rest = rest[:1], rest[2:]
            _lang, _, rest = rest.partition(b"\x00")
            _tkey, _, rest = rest.partition(b"\x00")
            raw = _inflate(rest) if flag == b"\x01" else rest
            if key == XMP_KEYWORD:
                out.xmp = raw
                return
            text = raw.decode("utf-8", "replace")
    except (zlib.error, ValueError) as e:
        found.error(f"{name} chunk {key!r} unreadable: {e}")
        return
    _add_text(found, key, text)


def _add_text(found: Findings, key: str, text: str) -> None:
    lower = key.lower()
    found.add(key, text, hint=lower in HINT_KEYS)
    if lower in GENERATOR_KEYS and (lower != "prompt" or text.lstrip().startswith("{")):
        generator = GENERATOR_KEYS[lower]
        found.claims.append(AIClaim(source="png_text", field=key, value=shorten(text), kind="generator_hint",
                                    description=f"PNG text '{key}': generation settings written by {generator}"))
    elif (claim := parameters_claim("png_text", key, text)) is not None:
        found.claims.append(claim)


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TEXT_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"inflates to more than {MAX_TEXT_BYTES} bytes")
    return out
