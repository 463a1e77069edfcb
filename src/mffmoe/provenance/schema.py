"""What provenance reading returns: typed evidence with its source, kept apart from the detector's score.

A `Provenance` records what the file's own metadata says (C2PA, EXIF, XMP/IPTC, PNG text, container
tags) and nothing more. Metadata is written by whoever made or last saved the file: it can be stripped or
forged, so "no provenance found" is never evidence of authenticity, and a claim of AI generation is a
claim, reported beside the verdict, never folded into it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Source = Literal["c2pa", "exif", "xmp", "iptc", "png_text", "container", "file"]
"""Where a piece of evidence was read: the C2PA manifest store, EXIF, an XMP packet, IPTC-IIM, PNG text
chunks, video container/stream tags, or the file as a whole (its kind, for errors)."""

ClaimKind = Literal["ai_generated", "ai_composite", "synthetic", "generator_hint"]
"""How strongly metadata says "made by AI":
- ai_generated: a declared IPTC/C2PA digital source type of media made by a trained model
  (trainedAlgorithmicMedia);
- ai_composite: a declared composite with AI-generated parts (compositeWithTrainedAlgorithmicMedia);
- synthetic: declared synthetic media (algorithmicMedia, compositeSynthetic: made by an algorithm or
  containing synthetic parts, which IPTC's guidance also uses for generative AI edits);
- generator_hint: no declaration, but a known AI generator's name or its parameters (Midjourney in
  Software, Stable Diffusion settings in PNG text, a ComfyUI workflow)."""

C2PAStatus = Literal["found", "absent", "not_checked", "error"]
"""found: a manifest store was read; absent: c2pa-python looked and found none; not_checked: c2pa-python is
not installed or the format is not one it reads; error: a manifest store is there but could not be read."""


class Evidence(BaseModel):
    """One metadata field as read: where, which field, its value (long values are shortened)."""

    source: Source
    field: str
    value: str


class AIClaim(BaseModel):
    """Metadata that says the media was generated or composited by AI, and which source said so."""

    source: Source
    field: str
    value: str
    kind: ClaimKind
    description: str = Field(description="one line for a report, e.g. 'C2PA digitalSourceType "
                                         "trainedAlgorithmicMedia: made by a trained model, i.e. generative AI'")


class ProvenanceError(BaseModel):
    """A metadata block that is there but could not be read (corrupt, truncated, too large). Recorded,
    never raised: an unreadable metadata block must not sink the analysis of the pixels."""

    source: Source
    message: str


class C2PAAction(BaseModel):
    action: str
    digital_source_type: str | None = None
    software_agent: str | None = None
    when: str | None = None
    manifest: str = Field(default="active", description="'active' or the label of an ingredient's manifest")


class C2PAInfo(BaseModel):
    """The active manifest of a C2PA manifest store, as c2pa-python reads and validates it (offline: no
    remote manifests, no OCSP). `validation_state` is c2pa's own word (Invalid / Valid / Trusted); a chain
    that is not on c2pa's trust list reads as `signingCredential.untrusted` in `validation_codes`."""

    active_manifest: str | None = None
    claim_generator: str | None = None
    title: str | None = None
    format: str | None = None
    actions: list[C2PAAction] = Field(default_factory=list)
    digital_source_types: list[str] = Field(default_factory=list)
    signer: str | None = Field(default=None, description="the signing certificate's subject common name")
    issuer: str | None = Field(default=None, description="the signing certificate's issuer organisation")
    signature_alg: str | None = None
    signing_time: str | None = Field(default=None, description="from a time-stamp, when the manifest has one")
    validation_state: str | None = None
    validation_codes: list[str] = Field(default_factory=list, description="failure codes, e.g. "
                                        "signingCredential.untrusted")
    validation_errors: list[str] = Field(default_factory=list, description="their explanations")
    manifest_count: int = 0
    ingredients: list[str] = Field(default_factory=list, description="titles of the ingredients")


class Provenance(BaseModel):
    """Everything the file's metadata says about where it came from; never a verdict."""

    path: str
    media_kind: Literal["image", "video", "unknown"]
    found: bool = Field(description="any provenance evidence at all (errors and notes are not evidence)")
    summary: str = Field(description="one line: 'no provenance found', 'metadata claims AI generation "
                                     "(...)' or 'provenance found: ...; no AI-generation claim'")
    claims_ai: bool = Field(description="some source claims AI generation or synthetic content")
    ai_claims: list[AIClaim] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    c2pa_status: C2PAStatus = "not_checked"
    c2pa: C2PAInfo | None = None
    exif: dict[str, str] = Field(default_factory=dict)
    xmp: dict[str, str] = Field(default_factory=dict)
    iptc: dict[str, str] = Field(default_factory=dict)
    png_text: dict[str, str] = Field(default_factory=dict)
    container: dict[str, str] = Field(default_factory=dict)
    errors: list[ProvenanceError] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="what was not checked and why")

    def report_lines(self) -> list[str]:
        """Plain lines for a text report: the summary, the AI claims with their sources, the evidence."""
        lines = [f"provenance: {self.summary}"]
        lines += [f"  AI claim [{c.source}] {c.field}: {c.description}" for c in self.ai_claims]
        if self.c2pa is not None:
            c = self.c2pa
            state = c.validation_state or "unknown"
            codes = f" ({', '.join(c.validation_codes)})" if c.validation_codes else ""
            lines.append(f"  C2PA: generator {c.claim_generator or '?'}, signed by {c.signer or '?'}"
                         f" (issuer {c.issuer or '?'}), validation {state}{codes}")
        lines += [f"  [{e.source}] {e.field}: {e.value}" for e in self.evidence]
        lines += [f"  unreadable [{e.source}]: {e.message}" for e in self.errors]
        lines += [f"  note: {n}" for n in self.notes]
        return lines
