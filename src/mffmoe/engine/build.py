"""The child process `prepare.ensure_prepared` starts: `python -m mffmoe.engine.build WEIGHTS`.

Loads the weights with torch, exports the OpenVINO graphs (`export.ensure_openvino`) and writes the
calibration record (`calibrate.py`), with progress lines on stderr that the parent relays; an expected
failure ends with one `MFFMOE-ERROR {json}` line that the parent raises as the same typed error.

Kept small, as a one-shot torch run is (docs/performance.md, "Memory"): triton stays out, the CUDA library
pages touched at import are dropped, and after every step (an expert exported or converted, an engine
measured) so are the weights' file pages that step read (memory-mapped, read-only: they come back from the
page cache when read again); torch is measured as the lean engine, which leaves the weights mapped instead
of copying all seven. Measured on the full roster: 1.63 GB at the peak instead of 3.20 (the peak is now
the resident OpenVINO engine being timed beside torch's libraries).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from mffmoe.engine.cache import say
from mffmoe.engine.memory import drop_clean_library_pages, drop_file_pages, skip_unused_imports, trim_heap
from mffmoe.engine.prepare import ENGINES, ERROR_TAG, FORMAT
from mffmoe.errors import MFFMoEError


def _releasing(files: list[str]) -> Callable[[str], None]:
    """`say`, then drop the pages of `files` the step just done read, and give freed heap back."""
    def step(message: str) -> None:
        say(message)
        drop_file_pages(files)
        trim_heap()
    return step


def _build(source: str, fingerprint: str | None, allow_missing_ema: bool) -> None:
    """The child's work: load the weights (torch), export, calibrate; progress lines on stderr."""
    skip_unused_imports()  # before timm is imported
    from mffmoe.engine.calibrate import calibrate
    from mffmoe.engine.export import ensure_openvino
    from mffmoe.model.checkpoint import load_weights

    model, info = load_weights(source, allow_missing_ema=allow_missing_ema)
    if fingerprint is not None and info.fingerprint() != fingerprint:
        raise MFFMoEError(f"the weights at {source} changed while their graphs were being prepared")
    drop_clean_library_pages()  # the build runs on the CPU
    step = _releasing(list(info.files.values()))
    step("weights loaded")
    ensure_openvino(model, info, progress=step)
    say("checking the graphs against the torch engine on natural-looking images and timing both")
    # the lean torch engine (a one-shot job's) keeps the weights mapped; the resident one would copy them all
    record = calibrate(model, info, engines=ENGINES, log=step, options={"torch": {"lean": True}})
    result = record["engines"].get(FORMAT, {})
    if not result.get("ok"):
        say(f"the OpenVINO graphs differ from torch by {result.get('max_abs_diff')} (> 1e-4): auto keeps torch")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mffmoe.engine.build", description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--fingerprint")
    ap.add_argument("--allow-missing-ema", action="store_true")
    a = ap.parse_args(argv)
    try:
        _build(a.weights, a.fingerprint, a.allow_missing_ema)
    except MFFMoEError as e:
        print(ERROR_TAG + json.dumps({"type": type(e).__name__, "message": str(e)}), file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
