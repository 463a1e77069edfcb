"""Reduced precision for the OpenVINO engine, prepared and checked on first use (`--precision`).

`engine/precision.py` says what each precision is and where it runs; this module gives the engine what a
precision needs beyond compile properties:

- int8 graphs: quantised once from the cached fp32 IRs (`precision.quantize_openvino_ir`, calibrated on
  generated images), in `openvino-int8/` beside them, built in a staging directory under a lock, like
  the fp32 graphs (`prepare.py`);
- the measured agreement with fp32: on first use of a precision for these weights, both run a fixed set
  of natural-looking images (`media.samples`, seeds disjoint from the calibration's); the max |score
  difference| and label agreement are recorded (`precision.json`), printed, and kept on the engine
  (`OpenVINOEngine.agreement`, in `describe()`), so a reduced-precision score never comes without
  its measured cost.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mffmoe.engine.cache import MANIFEST, StagingDir, locked, read_json, say, write_json
from mffmoe.engine.precision import QUANTIZATION_VERSION, agreement, calibration_images, quantize_openvino_ir

INT8_DIR = "openvino-int8"
RECORD = "precision.json"
#: Images in the fixed set a reduced precision is compared with fp32 on (each runs both precisions once):
#: `media.samples.natural_batch`, smooth frames and dead leaves. CHECK_SET names that set in the record,
#: so an agreement measured on another set (smooth frames only, before) is measured again.
CHECK_IMAGES = 16
CHECK_SET = "natural-1"


def int8_graphs(fp32_dir: Path, files: list[str], input_size: int) -> tuple[Path, list[str]]:
    """The int8 IRs for the fp32 IRs in `fp32_dir` (quantised now if missing) and their file names."""
    final = fp32_dir.parent / INT8_DIR
    source = read_json(fp32_dir / MANIFEST) or {}

    def ready() -> dict[str, Any] | None:
        m = read_json(final / MANIFEST)
        ok = (m and m.get("version") == QUANTIZATION_VERSION and m.get("fingerprint") == source.get("fingerprint")
              and all((final / f).exists() for f in m.get("files", [])))
        return m if ok else None

    manifest = ready()
    if manifest is None:
        with locked(fp32_dir.parent / "int8.lock"):
            manifest = ready()
            if manifest is None:
                manifest = _quantize(fp32_dir, final, files, input_size, source)
    return final, list(manifest["files"])


def _quantize(fp32_dir: Path, final: Path, files: list[str], input_size: int, source: dict[str, Any],
              ) -> dict[str, Any]:
    xmls = [f for f in files if f.endswith(".xml")]
    say(f"--precision int8, first use with these weights: quantising the {len(xmls)} expert(s) with NNCF, "
        f"calibrated on generated images (once; about two minutes per expert at 512 px on 2 cores)")
    t0 = time.perf_counter()
    images = calibration_images(input_size)
    stage = StagingDir(final)
    try:
        out: list[str] = []
        for i, xml in enumerate(xmls):
            quantize_openvino_ir(fp32_dir / xml, stage.path / xml, images, input_size)
            out += [xml, xml.removesuffix(".xml") + ".bin"]
            say(f"int8 graph {i + 1}/{len(xmls)} quantised ({time.perf_counter() - t0:.0f} s)")
        manifest = {**source, "version": QUANTIZATION_VERSION, "precision": "int8", "files": out,
                    "calibration_images": len(images)}
        write_json(stage.path / MANIFEST, manifest)
    except BaseException:
        stage.discard()
        raise
    stage.commit()
    return manifest


def measured_agreement(precision: str, predict: Callable[[np.ndarray], np.ndarray], input_size: int,
                       fp32_dir: Path, fp32_files: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The recorded agreement with fp32 of an engine running `precision` (its `predict`, per-expert P(fake))
    for these graphs, measured now if missing; `config` compiles the fp32 graphs (f32 forced)."""
    from mffmoe.media.samples import natural_batch

    path = fp32_dir.parent / RECORD
    record = read_json(path) or {}
    source = (read_json(fp32_dir / MANIFEST) or {}).get("fingerprint")
    key = precision if precision != "int8" else f"int8:{QUANTIZATION_VERSION}"
    found = record.get(key)
    if isinstance(found, dict) and found.get("fingerprint") == source and found.get("check_set") == CHECK_SET:
        return found
    x = natural_batch(CHECK_IMAGES, input_size, seed=0)
    reduced = predict(x).mean(axis=1)
    exact = _fp32_scores(fp32_dir, fp32_files, x, config)
    result = {**agreement(exact, reduced), "fingerprint": source, "precision": precision, "check_set": CHECK_SET}
    write_json(path, {**record, key: result})
    say(f"--precision {precision} against fp32 on {CHECK_IMAGES} generated images: max |score difference| "
        f"{result['max_abs_diff']:.2e}, labels agree {100 * result['label_agreement']:.0f}% "
        f"({'within' if result['meets_targets'] else 'NOT within'} the 0.01 / 99% bounds); recorded in {path}")
    return result


def _fp32_scores(fp32_dir: Path, files: list[str], x: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """Ensemble P(fake) of the fp32 graphs, one expert compiled at a time (the reduced ones are loaded)."""
    import openvino as ov

    core = ov.Core()
    config = {**config, "INFERENCE_PRECISION_HINT": "f32"}
    probs = []
    for xml in (f for f in files if f.endswith(".xml")):
        compiled = core.compile_model(str(fp32_dir / xml), "CPU", config)
        request = compiled.create_infer_request()
        probs.append([float(request.infer({0: x[j:j + 1]})[compiled.output(0)].reshape(-1)[0]) for j in range(len(x))])
        del request, compiled
    return np.asarray(probs).mean(axis=0)
