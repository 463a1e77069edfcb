"""Media type by content (magic bytes, then the decoders themselves), never by file extension."""
from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from mffmoe.errors import EmptyMediaError, MediaNotFoundError, UnreadableMediaError, UnsupportedMediaError


class MediaKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


def _is_image_magic(head: bytes) -> bool:
    return (head.startswith(b"\xff\xd8\xff")                              # JPEG
            or head.startswith(b"\x89PNG\r\n\x1a\n")                      # PNG
            or head[:6] in (b"GIF87a", b"GIF89a")                         # GIF
            or head.startswith(b"BM")                                     # BMP
            or head[:4] in (b"II*\x00", b"MM\x00*")                       # TIFF
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")            # WebP
            or head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1")  # AVIF/HEIF stills
            or head.startswith(b"\x00\x00\x00\x0cjP  ")                   # JPEG 2000
            or head[:4] in (b"P5\n", b"P6\n") or head[:2] in (b"P5", b"P6"))  # PGM/PPM


def _is_video_magic(head: bytes) -> bool:
    return ((head[4:8] == b"ftyp" and not _is_image_magic(head))          # MP4 / MOV / 3GP
            or head.startswith(b"\x1a\x45\xdf\xa3")                       # Matroska / WebM
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")            # AVI
            or head.startswith(b"FLV")                                    # FLV
            or head.startswith(b"\x00\x00\x01\xba")                       # MPEG-PS
            or head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")       # ASF / WMV
            or head.startswith(b"OggS"))


def probe_kind(path: str | os.PathLike[str]) -> MediaKind:
    """Decide image vs video from the bytes; raise a typed error for missing, empty or other files."""
    path = Path(path)
    if not path.is_file():
        raise MediaNotFoundError(f"{path}: no such file")
    try:
        if path.stat().st_size == 0:
            raise EmptyMediaError(f"{path}: the file is empty")
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:  # permissions, I/O errors: typed, so one unreadable file never sinks a batch
        raise UnreadableMediaError(f"{path}: cannot be read ({e.strerror or e})") from e
    if _is_image_magic(head):
        return MediaKind.IMAGE
    if _is_video_magic(head) or (len(head) > 188 and head[0] == head[188] == 0x47):  # MPEG-TS
        return MediaKind.VIDEO
    # No known signature: let the decoders decide (Pillow first, it is cheap).
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path):
            return MediaKind.IMAGE
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        pass
    if _has_video_stream(path):
        return MediaKind.VIDEO
    raise UnsupportedMediaError(f"{path}: not an image or a video that can be read (content starts with "
                                f"{head[:8].hex(' ')})")


def _has_video_stream(path: Path) -> bool:
    import av
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            # FFmpeg takes the extension as a hint (".jpg" -> its image2 demuxer): still-image demuxers
            # do not make a video; Pillow has already refused the file as an image.
            fmt = container.format.name
            if fmt == "image2" or fmt.endswith("_pipe"):
                return False
            return any(s.type == "video" for s in container.streams)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return False
