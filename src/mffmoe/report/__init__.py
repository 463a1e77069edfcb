"""Reports of one analysis (issue 16): the JSON form (`content`), its Ed25519 signature (`sign`), a
self-contained HTML page (`html`) and a PDF printed from it (`pdf`).

A feature over the inference core: it reads a finished result and the detector that made it, and never
runs a model itself (the CLI analyses, then asks for the report). Provenance comes in as an argument,
so this package does not depend on how it is read.
"""
from __future__ import annotations

from mffmoe.report.content import REPORT_FORMAT, VOLATILE, build_report, stable_content
from mffmoe.report.render import CONTENT_TYPES, render_as
from mffmoe.report.sign import Verification, dumps, generate_keypair, sign, verify

__all__ = ["CONTENT_TYPES", "REPORT_FORMAT", "VOLATILE", "Verification", "build_report", "dumps",
           "generate_keypair", "render_as", "sign", "stable_content", "verify"]
