"""`mffmoe info` and `mffmoe convert`: look inside a checkpoint, and fold it into one safetensors file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mffmoe.cli.options import AllowMissingEmaOpt, Format, FormatOpt, WeightsOpt
from mffmoe.cli.output import err, fail
from mffmoe.errors import MFFMoEError


def info(
    weights: WeightsOpt = None,
    fmt: FormatOpt = Format.table,
    hashes: Annotated[bool, typer.Option("--hashes/--no-hashes", help="SHA-256 of the weight files.")] = True,
    allow_missing_ema: AllowMissingEmaOpt = False,
) -> None:
    """Show the roster, parameter count, EMA status, input size and file hashes of a checkpoint.

    `--format json` prints one indented object; `jsonl` the same object on one line."""
    from rich.console import Console
    from rich.table import Table

    from mffmoe._util.fs import sha256_file
    from mffmoe.config import resolve_weights_dir
    from mffmoe.model.checkpoint import load_weights

    try:
        model, ckpt = load_weights(resolve_weights_dir(weights), allow_missing_ema=allow_missing_ema)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    data: dict[str, Any] = {
        "source": ckpt.source, "layout": ckpt.layout, "roster": list(ckpt.roster),
        "experts": len(ckpt.roster), "parameters": model.num_parameters(),
        "parameters_per_expert": [sum(p.numel() for p in e.parameters()) for e in model.experts],
        "ema": ckpt.ema, "ema_num_updates": ckpt.ema_num_updates, "input_size": ckpt.input_size,
        "files": {role: {"path": p, "bytes": os.path.getsize(p), **({"sha256": sha256_file(p)} if hashes else {})}
                  for role, p in ckpt.files.items()},
    }
    if ckpt.metadata:
        data["metadata"] = ckpt.metadata
    if fmt is Format.jsonl:  # JSON Lines: the one record on one line
        print(json.dumps(data))
        return
    if fmt is Format.json:
        print(json.dumps(data, indent=2))
        return
    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, json.dumps(value, indent=1) if isinstance(value, dict | list) else str(value))
    Console(width=160).print(table)


def convert(
    weights: Annotated[Path, typer.Argument(help="Weights directory in an official layout.")],
    out: Annotated[Path, typer.Argument(help="Output .safetensors file (or a directory for mffmoe.safetensors).")],
    allow_missing_ema: AllowMissingEmaOpt = False,
) -> None:
    """Fold the EMA weights in and write one pickle-free safetensors file with metadata."""
    from mffmoe._util.fs import sha256_file
    from mffmoe.model.checkpoint import load_weights, save_safetensors

    try:
        model, ckpt = load_weights(weights, allow_missing_ema=allow_missing_ema)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    hashes = {role: sha256_file(p) for role, p in ckpt.files.items()}
    path = save_safetensors(model, ckpt, out, hashes)
    err.print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, EMA folded: {ckpt.ema})")
