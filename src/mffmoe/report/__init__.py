"""Reports of one analysis (issue 16): the JSON form (`content`), its Ed25519 signature (`sign`), a
self-contained HTML page (`html`) and a PDF printed from it (`pdf`).

A feature over the inference core: it reads a finished result and the detector that made it, and never
runs a model itself (the CLI analyses, then asks for the report). Provenance comes in as an argument,
so this package does not depend on how it is read.
"""
from __future__ import annotations

from mffmoe.report.content import REPORT_FORMAT, VOLATILE, build_report, stable_content
from mffmoe.report.sign import Verification, generate_keypair, sign, verify

__all__ = ["REPORT_FORMAT", "VOLATILE", "Verification", "build_report", "generate_keypair", "sign",
           "stable_content", "verify"]
