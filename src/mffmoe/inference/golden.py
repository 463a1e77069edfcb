"""Golden checks of weights, and `verify()`: the hash and structure checks of `mffmoe.model.verify` plus
files that must reproduce known scores.

A golden file is named `<anything>_should_be_<score>.<ext>` (as the upstream demo images are, e.g.
`img_1_should_be_0.0016829653177410.jpg`); analyzed in frame mode with the torch engine (the spec's
arithmetic), it must score `<score>` to within `GOLDEN_TOLERANCE`. A corrupted download that still loads
(a flipped bit in a weight gives a finite, wrong value) passes every structural check and fails here.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from mffmoe._util.fs import files_under
from mffmoe.inference.detector import Detector
from mffmoe.model.verify import Check, VerifyReport, hash_checks, structural_checks, weight_files

#: `<anything>_should_be_<score>.<ext>`
GOLDEN_NAME = re.compile(r"_should_be_([0-9.eE+-]+)\.[A-Za-z0-9]+$")
GOLDEN_TOLERANCE = 1e-3


def golden_files(directory: str | os.PathLike[str]) -> list[tuple[Path, float]]:
    """(file, stated score) for every golden file below `directory` (sorted; other files are ignored)."""
    out = []
    for f in files_under(Path(directory)):
        m = GOLDEN_NAME.search(f.name)
        if m:
            try:
                out.append((f, float(m.group(1))))
            except ValueError:
                continue
    return out


def golden_checks(weights: str | os.PathLike[str], directory: str | os.PathLike[str], *, device: str = "cpu",
                  tolerance: float = GOLDEN_TOLERANCE, allow_missing_ema: bool = False) -> list[Check]:
    """One `golden <file name>` check per golden file; a folder without one is one failed `golden` check."""
    files = golden_files(directory)
    if not files:
        return [Check(name="golden", group="golden", status="fail",
                      detail=f"no file named <anything>_should_be_<score>.<ext> in {directory}")]
    try:
        detector = Detector.from_dir(weights, device=device, engine="torch", crop="frame",
                                     allow_missing_ema=allow_missing_ema)
    except Exception as e:  # whatever stops the weights loading fails this check (structure says more)
        return [Check(name="golden", group="golden", status="fail",
                      detail=f"the weights did not load: {_first_line(e)}")]
    out = []
    try:
        for file, expected in files:
            name = f"golden {file.name}"
            try:
                score = detector.analyze(file).score
            except Exception as e:  # a NaN score fails the result's validation: report it, go on
                out.append(Check(name=name, group="golden", status="fail",
                                 detail=f"analysis failed: {type(e).__name__}: {_first_line(e)}"))
                continue
            diff = abs(score - expected)
            ok = math.isfinite(score) and diff <= tolerance
            out.append(Check(name=name, group="golden", status="pass" if ok else "fail",
                             detail=f"scored {score:.10f}, its name states {expected:.10f} (difference "
                                    f"{diff:.2e}, tolerance {tolerance:g})"))
    finally:
        detector.close()
    return out


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def verify(weights: str | os.PathLike[str], golden: str | os.PathLike[str] | None = None, *,
           hashes: bool = True, device: str = "cpu", known: Mapping[str, str] | None = None) -> VerifyReport:
    """Hash (unless `hashes=False`), structure and, with a `golden` folder, golden checks of the weights at
    `weights` (`known`: file name -> SHA-256, default `mffmoe.model.verify.KNOWN_SHA256`). Raises
    WeightsNotFoundError when there are no weights there; every fault found is a failed check."""
    source, layout, _ = weight_files(weights)
    checks = hash_checks(weights, known) if hashes else []
    checks += structural_checks(weights)
    if golden is not None:
        checks += golden_checks(weights, golden, device=device)
    return VerifyReport(source=source, layout=layout, checks=checks)
