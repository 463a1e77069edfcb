"""What one metadata reader found, before `read_provenance` merges the readers into a `Provenance`."""
from __future__ import annotations

from dataclasses import dataclass, field

from mffmoe.provenance.hints import hint_claim, shorten, source_type_claim
from mffmoe.provenance.schema import AIClaim, Evidence, ProvenanceError, Source

MAX_VALUE_CHARS = 65_536  # one stored field (a ComfyUI workflow can be large); evidence lines are shorter


@dataclass
class Findings:
    """Fields read from one source, the evidence lines and AI claims they make, and unreadable blocks."""

    source: Source
    fields: dict[str, str] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    claims: list[AIClaim] = field(default_factory=list)
    errors: list[ProvenanceError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: object, *, evidence: bool = True, hint: bool = False,
            source_type: bool = False) -> None:
        """Record a field; as evidence (shortened), and checked for a generator name or a digital source
        type when asked."""
        text = value if isinstance(value, str) else str(value)
        text = text.replace("\x00", "").strip()
        if not text:
            return
        self.fields[name] = text[:MAX_VALUE_CHARS]
        if evidence:
            self.evidence.append(Evidence(source=self.source, field=name, value=shorten(text)))
        if hint and (claim := hint_claim(self.source, name, text)) is not None:
            self.claims.append(claim)
        if source_type and (claim := source_type_claim(self.source, name, text)) is not None:
            self.claims.append(claim)

    def error(self, message: str) -> None:
        self.errors.append(ProvenanceError(source=self.source, message=message))
