"""The `mffmoe` command. Each subcommand is thin: it parses options and calls the library.

Feature packages add their own commands through `register(app)` (see COMMAND_MODULES), so this file
stays small; expected errors are printed as one line, never a traceback.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Iterable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from mffmoe.errors import MFFMoEError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MFF-MoE V1 deepfake detector for images and videos.")
err = Console(stderr=True)

#: Modules that contribute subcommands with a `register(app)` function.
COMMAND_MODULES: list[str] = ["mffmoe.engine.commands", "mffmoe.server.commands", "mffmoe.train.commands",
                              "mffmoe.scan.commands"]


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories recursed (sorted, hidden files skipped), input order kept."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        else:
            out.append(p)
    return out


def load_detector(weights: Optional[Path], device: str, untrained: bool, allow_missing_ema: bool = False,
                  **kwargs):
    from mffmoe.detector import Detector
    try:
        if untrained:
            return Detector.untrained(device=device, **kwargs)
        return Detector.from_dir(weights, device=device, allow_missing_ema=allow_missing_ema, **kwargs)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    except ValueError as e:
        raise fail(str(e)) from None


def _result_row(path: str, result) -> dict:
    if isinstance(result, MFFMoEError):
        return {"path": path, "error": result.to_dict()}
    return {"path": path, **result.model_dump(mode="json")}


def _print_table(rows: list[dict], console: Console) -> None:
    table = Table(show_lines=False, header_style="bold")
    for col in ("path", "type", "prediction", "confidence", "score", "frames", "time (s)", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(r["path"], "-", "[red]ERROR[/]", "", "", "", "",
                          f"[red]{r['error']['type']}: {r['error']['message']}[/]")
            continue
        color = "red" if r["prediction"] == "FAKE" else "green"
        frames = ""
        if r["media_type"] == "video":
            frames = f"{r['frames_analyzed']}" + (f" ({r['frames_failed']} failed)" if r["frames_failed"] else "")
        table.add_row(r["path"], r["media_type"], f"[{color}]{r['prediction']}[/]", f"{r['confidence']:.3f}",
                      f"{r['score']:.4f}", frames, f"{r['processing_time']:.2f}", r.get("note") or "")
    console.print(table)


@app.command()
def analyze(
    paths: List[Path] = typer.Argument(..., help="Image/video files or directories (recursed)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights dir or .safetensors file "
                                           "(default: $MFFMOE_WEIGHTS, then ./models/MFF-MoE-V1)."),
    frames: int = typer.Option(100, "--frames", "-n", min=1, help="Frames sampled per video."),
    device: Device = typer.Option(Device.auto, "--device"),
    engine: str = typer.Option("auto", "--engine", help="torch | onnxruntime | openvino | auto: the fastest "
                               "engine exported and calibrated by `mffmoe export` for this job (else torch)."),
    early_exit: bool = typer.Option(False, "--early-exit", help="Run experts cheapest first and stop once the "
                                    "label cannot change (exact label; score given as an interval)."),
    autocast: Optional[str] = typer.Option(None, "--autocast", help="CUDA only, torch engine: fp16 | bf16 "
                                           "autocast (faster, not exact; use a larger --batch-size)."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report here, not stdout."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="FAKE iff score >= this."),
    pooling: str = typer.Option("mean", "--pooling", help="Video pooling: mean | confident | median."),
    untrained: bool = typer.Option(False, "--untrained", help="Random weights (pipeline check only)."),
    allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema",
                                           help="Run on raw weights when the .state file is absent."),
) -> None:
    """Analyze images and videos; print one result per input, in input order."""
    global _fast_exit
    _fast_exit = True
    from mffmoe.engine.lean import skip_unused_imports
    skip_unused_imports()  # before torch/timm are imported: keeps one-shot runs small
    from mffmoe.pooling import get_pooling
    try:
        get_pooling(pooling)
    except ValueError as e:
        raise fail(str(e)) from None
    files = expand_paths(paths)
    if not files:
        raise fail("no input files")
    from mffmoe.engine.commands import analyze_engine_options
    detector = load_detector(weights, device.value, untrained, allow_missing_ema, engine=engine,
                             engine_options=analyze_engine_options(engine, files, frames, autocast),
                             early_exit=early_exit,
                             batch_size=batch_size, threshold=threshold, frames=frames, pooling=pooling)
    rows: list[dict] = []
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=err, transient=True,
                        disable=not err.is_terminal and not os.environ.get("MFFMOE_PROGRESS"))
    with progress:
        files_task = progress.add_task("files", total=len(files))
        frames_task = progress.add_task("frames", total=None, visible=False)

        def on_frames(done: int, total: int) -> None:
            progress.update(frames_task, completed=done, total=total, visible=True)

        for path, result in detector.analyze_many(files, on_video_progress=on_frames):
            rows.append(_result_row(path, result))
            progress.update(files_task, advance=1)
            progress.update(frames_task, visible=False, completed=0)
    out = open(output, "w") if output else sys.stdout
    try:
        if fmt is Format.json:
            out.write(json.dumps(rows, indent=2) + "\n")
        elif fmt is Format.jsonl:
            out.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            _print_table(rows, Console(file=out, width=160) if output else Console(width=160))
    finally:
        if output:
            out.close()
    n_failed = sum("error" in r for r in rows)
    if n_failed:
        err.print(f"[red]{n_failed} of {len(rows)} input(s) failed[/]")
        raise typer.Exit(1)


@app.command()
def info(
    weights: Optional[Path] = typer.Option(None, "--weights", "-w"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    hashes: bool = typer.Option(True, "--hashes/--no-hashes", help="SHA-256 of the weight files."),
    allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema"),
) -> None:
    """Show the roster, parameter count, EMA status, input size and file hashes of a checkpoint."""
    from mffmoe.config import resolve_weights_dir
    from mffmoe.model.checkpoint import load_weights, sha256_file
    try:
        model, ckpt = load_weights(resolve_weights_dir(weights), allow_missing_ema=allow_missing_ema)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    data = {
        "source": ckpt.source, "layout": ckpt.layout, "roster": list(ckpt.roster),
        "experts": len(ckpt.roster), "parameters": model.num_parameters(),
        "parameters_per_expert": [sum(p.numel() for p in e.parameters()) for e in model.experts],
        "ema": ckpt.ema, "ema_num_updates": ckpt.ema_num_updates, "input_size": ckpt.input_size,
        "files": {role: {"path": p, "bytes": os.path.getsize(p), **({"sha256": sha256_file(p)} if hashes else {})}
                  for role, p in ckpt.files.items()},
    }
    if ckpt.metadata:
        data["metadata"] = ckpt.metadata
    if fmt is not Format.table:
        print(json.dumps(data, indent=2))
        return
    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, json.dumps(value, indent=1) if isinstance(value, (dict, list)) else str(value))
    Console(width=160).print(table)


@app.command()
def convert(
    weights: Path = typer.Argument(..., help="Weights directory in an official layout."),
    out: Path = typer.Argument(..., help="Output .safetensors file (or a directory for mffmoe.safetensors)."),
    allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema"),
) -> None:
    """Fold the EMA weights in and write one pickle-free safetensors file with metadata."""
    from mffmoe.model.checkpoint import load_weights, save_safetensors, sha256_file
    try:
        model, ckpt = load_weights(weights, allow_missing_ema=allow_missing_ema)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    hashes = {role: sha256_file(p) for role, p in ckpt.files.items()}
    path = save_safetensors(model, ckpt, out, hashes)
    err.print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, EMA folded: {ckpt.ema})")


@app.command()
def sample(out: Path = typer.Argument(Path("samples"), help="Directory to write sample media into."),
           ) -> None:
    """Generate a small sample set (an image and a short video) to try the pipeline on."""
    from mffmoe.samples import make_image, make_video
    out.mkdir(parents=True, exist_ok=True)
    paths = [make_image(out / "sample.jpg", 640, 480, quality=92),
             make_video(out / "sample.mp4", seconds=2.0, fps=25, width=320, height=240)]
    for p in paths:
        print(p)


def _register_plugins() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


#: Set by commands whose process ends right after them (analyze): `main` then skips the interpreter's
#: teardown, which in torch's CUDA build faults ~170 MB of library pages back in just to exit (it would
#: be the run's peak memory). atexit handlers still run; output is flushed first.
_fast_exit = False


def _exit_now(code: object) -> None:
    import atexit
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def main() -> None:
    _register_plugins()
    try:
        app()
    except SystemExit as e:
        if _fast_exit:
            _exit_now(e.code)
        raise
    except MFFMoEError as e:  # anything the commands did not catch themselves
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
