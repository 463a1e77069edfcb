"""Weight verification: are these the weights they claim to be, intact? (`mffmoe verify`, the server's
start-up checks.)

Three groups of checks, each a `Check(name, group, status, detail)`:

- **hash**: the SHA-256 of every file, compared with `KNOWN_SHA256` where the package knows the file's
  published digest, else reported `unknown` for the user to compare with the publisher's.
- **structure**: every file readable (pickle-free), the expected roster (the manifest's, else the spec's
  seven experts) matching the keys and shapes, every tensor finite, every BatchNorm `running_var` positive,
  and the EMA shadows present and not equal to the raw parameters (a converted `.safetensors` file has
  them folded in: not applicable there). Works on the state dicts as read (memory-mapped), no model built.
- **golden**: every file named `<anything>_should_be_<score>.<ext>` in a folder is analyzed in frame mode
  with the torch engine and must score `<score>` to 1e-3. That needs the detector, so it lives a layer up,
  in `mffmoe.inference.golden`, with `verify()`, which runs all three.

Statuses: `pass`, `fail`, `unknown` (nothing to compare with: not a failure) and `skipped` (not applicable,
or an earlier failure left nothing to check). A report is `ok` when no check failed.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, computed_field

from mffmoe._util.fs import sha256_file
from mffmoe.errors import WeightsError
from mffmoe.model.check import Check, Status
from mffmoe.model.checkpoint import (
    MANIFEST,
    SAFETENSORS_FORMAT,
    Layout,
    _ema_entries,
    _locate,
    _normalize_keys,
    check_state_dict,
    count_experts,
    read_manifest,
    safe_torch_load,
    validate_metadata,
)
from mffmoe.model.ema import validate_ema_state
from mffmoe.model.ensemble import build_model

#: SHA-256 (hex) of the published weight files, by file name. Filled from the publisher's release notes
#: (or a verified download: `mffmoe info --hashes`); empty while the package knows none, and then every
#: hash check is `unknown`. Only names of the official layouts belong here; a mismatch is a failure,
#: unless the weights' manifest says they were trained locally (`mffmoe train` records `trained`).
KNOWN_SHA256: dict[str, str] = {
    # "MFF-MoE-v1.pth": "<64 hex digits>",
    # "MFF-MoE-v1.state": "<64 hex digits>",
}

class VerifyReport(BaseModel):
    """Every check of one set of weights, in the order they ran."""

    source: str
    layout: str
    checks: list[Check]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """No check failed (`unknown` and `skipped` are not failures)."""
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


# --- hashes --------------------------------------------------------------------------------------
def weight_files(path: str | os.PathLike[str]) -> tuple[str, str, dict[str, Path]]:
    """(source, layout, role -> file) of the weights at `path`, from the file names alone. Raises
    WeightsNotFoundError (nothing there to verify)."""
    where, layout = _locate(path)
    if layout is None:
        return str(where), "safetensors", {"safetensors": where}
    files = {"weights": where / layout.weights}
    if (where / layout.ema).exists():
        files["ema"] = where / layout.ema
    return str(where), layout.name, files


def _trained_locally(source: Path) -> bool:
    import json

    try:
        data = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "trained" in data


def hash_checks(path: str | os.PathLike[str], known: Mapping[str, str] | None = None) -> list[Check]:
    """One `sha256 <file>` check per weight file (`known`: name -> digest, default KNOWN_SHA256)."""
    known = KNOWN_SHA256 if known is None else known
    source, _, files = weight_files(path)
    local = Path(source).is_dir() and _trained_locally(Path(source))
    out = []
    for file in files.values():
        digest = sha256_file(file)
        name = f"sha256 {file.name}"
        expected = known.get(file.name)
        if expected is None:
            out.append(Check(name=name, group="hash", status="unknown",
                             detail=f"{digest} (unknown to this package: compare with the publisher's)"))
        elif digest == expected.lower():
            out.append(Check(name=name, group="hash", status="pass", detail=f"{digest} (the published file)"))
        elif local:
            out.append(Check(name=name, group="hash", status="unknown",
                             detail=f"{digest} (trained locally, per {MANIFEST}: not the published file)"))
        else:
            out.append(Check(name=name, group="hash", status="fail",
                             detail=f"{digest} differs from the published {expected}: the file is corrupt, "
                                    f"truncated or not the release"))
    return out


# --- structure -----------------------------------------------------------------------------------
@dataclass
class _States:
    """What the structural checks look at: the raw state dict, the EMA shadows by expert, the roster."""

    checks: list[Check] = field(default_factory=list)
    raw: dict[str, torch.Tensor] | None = None
    shadows: list[list[torch.Tensor]] | None = None
    ema: Check | None = None  # the EMA check, when reading already decided it

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name=name, group="structure", status=status, detail=detail))


def _roster_text(roster: Sequence[str], origin: str) -> str:
    counts: dict[str, int] = {}
    for name in roster:
        counts[name] = counts.get(name, 0) + 1
    names = ", ".join(f"{n} x{k}" if k > 1 else n for n, k in counts.items())
    return f"{len(roster)} expert(s) ({origin}): {names}"


def _read_official(directory: Path, layout: Layout, allow_missing_ema: bool) -> _States:
    s = _States()
    weights_path, ema_path = directory / layout.weights, directory / layout.ema
    try:
        s.raw = _normalize_keys(safe_torch_load(weights_path), weights_path)
        s.add(f"readable {weights_path.name}", "pass", f"a plain tensor state dict, {len(s.raw)} tensors")
    except WeightsError as e:
        s.add(f"readable {weights_path.name}", "fail", str(e))
    ema_state: Any = None
    if ema_path.exists():
        try:
            ema_state = safe_torch_load(ema_path)
            s.add(f"readable {ema_path.name}", "pass", "a plain EMA state")
        except WeightsError as e:
            s.add(f"readable {ema_path.name}", "fail", str(e))
            s.ema = Check(name="EMA shadows", group="structure", status="skipped",
                          detail=f"{ema_path.name} unreadable")
    elif allow_missing_ema:
        s.ema = Check(name="EMA shadows", group="structure", status="skipped",
                      detail=f"{ema_path.name} absent: running on the raw weights deliberately (allow_missing_ema)")
    else:
        s.ema = Check(name="EMA shadows", group="structure", status="fail",
                      detail=f"{ema_path} is missing: MFF-MoE runs on its EMA weights, the raw ones alone score "
                             f"differently")
    try:
        roster, input_size = read_manifest(directory)
        origin = f"from {MANIFEST}" if (directory / MANIFEST).exists() else "the spec's default roster"
    except WeightsError as e:
        s.add("roster", "fail", str(e))
        return s
    if s.raw is None:
        s.add("roster", "skipped", f"{weights_path.name} unreadable")
        return s
    try:
        count_experts(s.raw, roster, str(weights_path))
        skeleton = build_model(roster, input_size, device="meta")
        check_state_dict(skeleton, s.raw, str(weights_path))
    except WeightsError as e:
        s.add("roster", "fail", str(e))
        return s
    s.add("roster", "pass", _roster_text(roster, origin) + ", keys and shapes match")
    if ema_state is None:
        return s
    try:
        entries = _ema_entries(ema_state, len(roster), ema_path)
        s.shadows = []
        names: list[list[str]] = []
        for i, (expert, entry) in enumerate(zip(skeleton.experts, entries, strict=True)):
            params = list(expert.named_parameters())
            state = validate_ema_state(entry, [tuple(p.shape) for _, p in params],
                                       where=f"{ema_path.name} expert {i} ({roster[i]})")
            s.shadows.append(list(state["shadow_params"]))
            names.append([f"experts.{i}.{n}" for n, _ in params])
    except (WeightsError, ValueError) as e:
        s.shadows = None
        s.ema = Check(name="EMA shadows", group="structure", status="fail", detail=str(e))
        return s
    s.ema = _compare_ema(s.raw, s.shadows, names, roster)
    return s


def _compare_ema(raw: Mapping[str, torch.Tensor], shadows: list[list[torch.Tensor]], names: list[list[str]],
                 roster: Sequence[str]) -> Check:
    """Fail when an expert's shadows are all equal to its raw parameters (the EMA was saved from the live
    weights, or never updated): inference would then run on the raw weights without saying so."""
    same: list[str] = []
    equal_tensors = total = 0
    for i, (expert_shadows, expert_names) in enumerate(zip(shadows, names, strict=True)):
        equal = [torch.equal(shadow, raw[name]) for shadow, name in zip(expert_shadows, expert_names, strict=True)]
        equal_tensors += sum(equal)
        total += len(equal)
        if equal and all(equal):
            same.append(f"{i} ({roster[i]})")
    if same:
        return Check(name="EMA shadows", group="structure", status="fail",
                     detail=f"the shadows of expert(s) {', '.join(same)} equal the raw parameters: not EMA weights")
    return Check(name="EMA shadows", group="structure", status="pass",
                 detail=f"present for {len(shadows)} expert(s); {total - equal_tensors} of {total} shadow tensors "
                        f"differ from the raw parameters")


def _read_safetensors(path: Path, allow_missing_ema: bool) -> _States:
    import json

    from safetensors import SafetensorError, safe_open

    from mffmoe.model.checkpoint import _mmap_safetensors

    s = _States()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
        if meta.get("format") != SAFETENSORS_FORMAT:
            raise ValueError(f"metadata format {meta.get('format')!r}, expected {SAFETENSORS_FORMAT!r}")
        s.raw = _mmap_safetensors(path, keys)
        s.add(f"readable {path.name}", "pass", f"an mffmoe safetensors file, {len(keys)} tensors")
    except (SafetensorError, ValueError, KeyError, OSError, RuntimeError) as e:
        s.add(f"readable {path.name}", "fail", f"{path}: not a readable mffmoe safetensors file ({e})")
        s.add("roster", "skipped", f"{path.name} unreadable")
        return s
    try:
        roster_raw = json.loads(meta.get("roster", "null"))
        size_raw = meta.get("input_size", "")
        roster, input_size = validate_metadata(roster_raw, int(size_raw) if size_raw.isdigit() else size_raw,
                                               f"{path} metadata")
        count_experts(s.raw, roster, str(path))
        check_state_dict(build_model(roster, input_size, device="meta"), s.raw, str(path))
    except (WeightsError, ValueError) as e:
        s.add("roster", "fail", str(e))
    else:
            s.add("roster", "pass", _roster_text(roster, "from the file's metadata") + ", keys and shapes match")
    folded = meta.get("ema_folded", "true")
    if folded == "true":
        s.ema = Check(name="EMA shadows", group="structure", status="skipped",
                      detail="not applicable: folded into the weights by `mffmoe convert` (ema_folded: true), "
                             "so there are no raw parameters to compare them with")
    else:
        s.ema = Check(name="EMA shadows", group="structure", status="skipped" if allow_missing_ema else "fail",
                      detail=f"ema_folded: {folded}: converted from raw weights without their EMA state"
                             + (" (allowed: allow_missing_ema)" if allow_missing_ema else ""))
    return s


def _floats(tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
    return ((k, t) for k, t in tensors if t.is_floating_point())


def _finite(s: _States) -> Check:
    tensors: list[tuple[str, torch.Tensor]] = list((s.raw or {}).items())
    for i, expert in enumerate(s.shadows or []):
        tensors += [(f"EMA expert {i} shadow_params[{j}]", t) for j, t in enumerate(expert)]
    if not tensors:
        return Check(name="finite", group="structure", status="skipped", detail="no readable tensors")
    bad = []
    for key, t in _floats(tensors):
        n = int((~torch.isfinite(t)).sum())
        if n:
            bad.append(f"{key} ({n} of {t.numel()})")
    if bad:
        more = f" ... and {len(bad) - 5} more tensors" if len(bad) > 5 else ""
        return Check(name="finite", group="structure", status="fail",
                     detail=f"NaN or infinite values in {', '.join(bad[:5])}{more}")
    n_values = sum(t.numel() for _, t in _floats(tensors))
    return Check(name="finite", group="structure", status="pass",
                 detail=f"{n_values:,} values in {len(tensors)} tensors, all finite")


def _batchnorm(s: _States) -> Check:
    variances = [(k, t) for k, t in (s.raw or {}).items() if k.endswith("running_var")]
    if not variances:
        detail = "no readable tensors" if s.raw is None else "no BatchNorm layers in these weights"
        return Check(name="batchnorm variances", group="structure", status="skipped", detail=detail)
    bad = [f"{k} (min {float(t.min()):g})" for k, t in variances if t.numel() and not bool((t > 0).all())]
    if bad:
        more = f" ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        return Check(name="batchnorm variances", group="structure", status="fail",
                     detail=f"zero, negative or NaN running_var in {', '.join(bad[:5])}{more}")
    return Check(name="batchnorm variances", group="structure", status="pass",
                 detail=f"{len(variances)} BatchNorm layers, every running_var positive")


def structural_checks(path: str | os.PathLike[str], allow_missing_ema: bool = False) -> list[Check]:
    """The structure group, on the files as read (memory-mapped where possible). `allow_missing_ema`: weights
    without EMA are run deliberately (a missing `.state` is `skipped`, not `fail`). Raises only
    WeightsNotFoundError (no weights at `path`); every other fault is a failed check."""
    where, layout = _locate(path)
    if layout is None:
        s = _read_safetensors(where, allow_missing_ema)
    else:
        s = _read_official(where, layout, allow_missing_ema)
    checks = [*s.checks, _finite(s), _batchnorm(s)]
    checks.append(s.ema or Check(name="EMA shadows", group="structure", status="skipped",
                                 detail="the roster did not match: shadows cannot be paired with parameters"))
    return checks
