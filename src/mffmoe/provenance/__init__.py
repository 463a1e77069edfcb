"""Provenance: what a file's own metadata (C2PA, EXIF, XMP/IPTC, PNG text, container tags) says about its
origin, as evidence with its source, reported beside the detector's score and never folded into it."""
from mffmoe.provenance.reader import read_provenance
from mffmoe.provenance.schema import AIClaim, C2PAAction, C2PAInfo, Evidence, Provenance, ProvenanceError

__all__ = ["AIClaim", "C2PAAction", "C2PAInfo", "Evidence", "Provenance", "ProvenanceError", "read_provenance"]
