"""Video container and stream tags (PyAV): encoder, creation_time, handler_name, com.apple.quicktime.*,
com.android.*, location, and so on. Only the header is read (the demuxer's probe), no frame is decoded.
"""
from __future__ import annotations

import os

from mffmoe.provenance.findings import Findings

# Tags that every muxer writes and that say nothing about the file's origin: kept in `container`, not
# evidence.
STRUCTURAL = {"major_brand", "minor_version", "compatible_brands", "language", "duration", "vendor_id",
              "handler_name:VideoHandler", "handler_name:SoundHandler"}
# Tags checked for an AI generator's name.
HINT_TAGS = {"encoder", "software", "comment", "description", "title", "artist", "author", "encoded_by",
             "com.apple.quicktime.software", "tool", "synopsis"}
GPS_TAGS = {"location", "location-eng", "com.apple.quicktime.location.iso6709", "xyz"}
MAX_TAGS = 200


def read_container(path: str | os.PathLike[str]) -> Findings:
    found = Findings("container")
    try:
        import av
    except ImportError:  # PyAV is a core dependency; keep the message typed anyway
        found.notes.append("container tags not read: PyAV is not installed")
        return found
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            found.fields["format"] = str(container.format.name)
            _tags(found, "", dict(container.metadata or {}))
            for i, stream in enumerate(container.streams):
                codec = getattr(getattr(stream, "codec_context", None), "name", None)
                found.fields[f"stream{i}.type"] = str(stream.type)
                if codec:
                    found.fields[f"stream{i}.codec"] = str(codec)
                _tags(found, f"stream{i}.", dict(stream.metadata or {}))
    except Exception as e:  # av.FFmpegError, OSError, UnicodeDecodeError...: the tags are lost, not the analysis
        found.error(f"container tags unreadable: {type(e).__name__}: {e}")
    return found


def _tags(found: Findings, prefix: str, tags: dict[str, str]) -> None:
    for n, (key, value) in enumerate(tags.items()):
        if n >= MAX_TAGS:
            found.notes.append(f"container: only the first {MAX_TAGS} tags of {prefix or 'the file'} were kept")
            return
        low = key.lower()
        name = f"{prefix}{key}"
        if low in GPS_TAGS:
            if f"{prefix}GPS" not in found.fields:
                found.add(f"{prefix}GPS", "present")
            found.fields[name] = "present"  # coordinates are not copied (privacy)
            continue
        structural = low in STRUCTURAL or f"{low}:{value}" in STRUCTURAL
        found.add(name, value, evidence=not structural, hint=low in HINT_TAGS or low.endswith(".software"))
