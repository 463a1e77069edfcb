"""The codec tag (FourCC) of an MP4/MOV file's video track, read from its boxes.

FFmpeg opens a stream whose codec it does not know without a decoder, and PyAV then exposes neither
the codec nor its tag; this names it in the error, so the user learns which codec is missing.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO

#: Boxes that only hold other boxes, on the way from `moov` to the sample descriptions.
_CONTAINERS = {b"trak", b"mdia", b"minf", b"stbl"}
_MAX_MOOV = 64 << 20  # a movie header larger than this is not read


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]; stops at a malformed one."""
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            break
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def _read_moov(f: BinaryIO, file_size: int) -> bytes | None:
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        header = f.read(16)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header[:8])
        head = 8
        if size == 1 and len(header) == 16:
            size, head = struct.unpack(">Q", header[8:16])[0], 16
        elif size == 0:
            size = file_size - pos
        if size < head:
            return None
        if kind == b"moov":
            if size > _MAX_MOOV:
                return None
            f.seek(pos + head)
            return f.read(size - head)
        pos += size
    return None


def _video_tags(moov: bytes) -> list[str]:
    tags: list[str] = []
    for kind, start, end in _boxes(moov, 0, len(moov)):
        if kind == b"trak":
            tags += _track_tag(moov, start, end)
    return tags


def _track_tag(data: bytes, start: int, end: int) -> list[str]:
    """The sample-description FourCCs of a track whose handler is `vide`."""
    handler = None
    entries: list[str] = []
    todo = [(start, end)]
    while todo:
        s, e = todo.pop()
        for kind, ps, pe in _boxes(data, s, e):
            if kind in _CONTAINERS:
                todo.append((ps, pe))
            elif kind == b"hdlr" and pe - ps >= 12:
                handler = data[ps + 8:ps + 12]
            elif kind == b"stsd" and pe - ps >= 8:
                entries += [k.decode("latin-1") for k, _, _ in _boxes(data, ps + 8, pe)]
    return entries if handler == b"vide" else []


def mp4_video_codec_tag(path: str | os.PathLike[str]) -> str | None:
    """The FourCC of the first video track of an MP4/MOV file, or None (another container, no such box)."""
    try:
        with open(path, "rb") as f:
            moov = _read_moov(f, os.fstat(f.fileno()).st_size)
    except OSError:
        return None
    if moov is None:
        return None
    tags = _video_tags(moov)
    return tags[0] if tags else None
