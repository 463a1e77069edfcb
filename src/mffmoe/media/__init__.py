"""Media: content probing, image decoding, video sampling, preprocessing."""
from mffmoe.media.probe import MediaKind, probe_kind

__all__ = ["MediaKind", "probe_kind"]
