"""The child process `prepare.ensure_prepared` starts: `python -m mffmoe.engine.build WEIGHTS`.

Loads the weights with torch, exports the OpenVINO graphs (`export.ensure_openvino`) and writes the
calibration record (`calibrate.py`), with progress lines on stderr that the parent relays; an expected
failure ends with one `MFFMOE-ERROR {json}` line that the parent raises as the same typed error.
"""
from __future__ import annotations

import argparse
import json
import sys

from mffmoe.engine.cache import say
from mffmoe.engine.prepare import ENGINES, ERROR_TAG, FORMAT
from mffmoe.errors import MFFMoEError


def _build(source: str, fingerprint: str | None, allow_missing_ema: bool) -> None:
    """The child's work: load the weights (torch), export, calibrate; progress lines on stderr."""
    from mffmoe.engine.calibrate import calibrate
    from mffmoe.engine.export import ensure_openvino
    from mffmoe.model.checkpoint import load_weights

    model, info = load_weights(source, allow_missing_ema=allow_missing_ema)
    if fingerprint is not None and info.fingerprint() != fingerprint:
        raise MFFMoEError(f"the weights at {source} changed while their graphs were being prepared")
    say("weights loaded")
    ensure_openvino(model, info, progress=say)
    say("checking the graphs against the torch engine on natural-looking images and timing both")
    record = calibrate(model, info, engines=ENGINES, log=say)
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
