"""CLI commands of this package (registered by mffmoe.cli through COMMAND_MODULES): `mffmoe train`
and `mffmoe evaluate`. Heavy imports (torch, sklearn, matplotlib) happen inside the commands."""
from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from mffmoe.errors import ConfigError


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True,
                    disable=not console.is_terminal and not os.environ.get("MFFMOE_PROGRESS"))


class _CliObserver:
    """Progress bar with the running loss, and one line per epoch with the validation AUCs."""

    def __init__(self, console, progress) -> None:
        self.console, self.progress = console, progress
        self.tasks: dict[str, Any] = {}

    def _task(self, name: str, total: int | None):
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")
        return self.tasks[name]

    def on_prepare(self, what: str, done: int, total: int) -> None:
        self.progress.update(self._task(what, total), completed=done, total=total)

    def on_epoch_start(self, epoch: int, epochs: int, step: int, steps: int) -> None:
        for t in list(self.progress.task_ids):
            self.progress.remove_task(t)
        self.tasks = {"epoch": self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps,
                                                      completed=step, info="")}

    def on_step(self, epoch: int, step: int, steps: int, losses, lr: float) -> None:
        loss = sum(losses) / max(len(losses), 1)
        self.progress.update(self.tasks["epoch"], completed=step, info=f"loss {loss:.4f} lr {lr:.2e}")

    def on_epoch_end(self, r: dict[str, Any]) -> None:
        line = f"epoch {r['epoch']}: loss {r['train_loss']:.4f}"
        if "val_auc" in r:
            experts = " ".join(_fmt(a, 3) for a in r["val_auc_experts"])
            line += f", val AUC {_fmt(r['val_auc'])} (experts {experts})"
            if r.get("val_frame_auc") is not None:
                line += f", frame AUC {_fmt(r['val_frame_auc'])}"
        self.console.print(line + f" [{r['seconds']:.1f}s]", highlight=False, soft_wrap=True)

    def on_warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)


def _print_metrics(report: dict[str, Any], console) -> None:
    from rich.table import Table

    levels = [("per file", report)]
    levels += [(name.replace("_", " "), report[name]) for name in ("video_level", "frame_level") if name in report]
    for title, m in levels:
        fpr = m["target_fpr"]
        table = Table(title=f"{title}: {m['n_real']} real, {m['n_fake']} fake", header_style="bold",
                      title_justify="left")
        for col in ("model", f"ACC@{m['threshold']:.3g}", "AUC", "EER", "EER thr", "AP",
                    f"thr@FPR{fpr:g}", f"TPR@FPR{fpr:g}"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, row in [("ensemble", m)] + [(f"{e['index']}: {e['name']}", e) for e in m["experts"]]:
            table.add_row(name, _fmt(row["accuracy"]), _fmt(row["auc"]), _fmt(row["eer"]),
                          _fmt(row["eer_threshold"]), _fmt(row["ap"]), _fmt(row["threshold_at_fpr"]),
                          _fmt(row["tpr_at_threshold"]))
        console.print(table)
        if m.get("note"):
            console.print(f"note: {m['note']}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `mffmoe` app."""

    @app.command()
    def train(
        out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, logs; the newest weights "
                                 "are placed here (loadable with --weights OUT), the best in OUT/best."),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="Folder with real/ and fake/, or a CSV "
                                           "with columns path,label (real/fake or 0/1)."),
        val: Optional[str] = typer.Option(None, "--val", help="Validation set (same forms as --data)."),
        val_split: Optional[float] = typer.Option(None, "--val-split", min=0.0, max=0.9,
                                                  help="Share of --data held out for validation when --val is "
                                                  "not given (stratified, by file) (default: 0.1; 0: none)."),
        experts: Optional[List[str]] = typer.Option(None, "--experts", help="timm model names, comma-separated "
                                                    "or repeated (default: the spec's seven, or --init's)."),
        init: Optional[str] = typer.Option(None, "--init", help="Start from this checkpoint (official layouts "
                                           "or .safetensors): raw weights and EMA state."),
        input_size: Optional[int] = typer.Option(None, "--input-size", min=8, help="(default: --init's, else 512)"),
        epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="(default: 10)"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1, help="(default: 16)"),
        lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW learning rate (default: 1e-4)."),
        min_lr: Optional[float] = typer.Option(None, "--min-lr", help="(default: 1e-6)"),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="(default: 0.05)"),
        warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", help="(default: 1)"),
        ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="(default: 0.995, adaptive)"),
        augment: Optional[str] = typer.Option(None, "--augment", help="Comma-separated from hflip, jpeg, "
                                              "blur, resize, or 'none' (default: all four)."),
        frames_per_video: Optional[int] = typer.Option(None, "--frames-per-video", min=1,
                                                       help="Frames sampled from each video (default: 16)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="(default: 0)"),
        amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA (default: on)."),
        save_every: Optional[int] = typer.Option(None, "--save-every", min=0,
                                                 help="Also checkpoint every N steps (default: epoch ends only)."),
        allow_missing_ema: Optional[bool] = typer.Option(None, "--allow-missing-ema",
                                                         help="Accept an --init without .state (EMA restarts)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
        workers: int = typer.Option(min(4, os.cpu_count() or 1), "--workers", min=0,
                                    help="Data-loading processes (0: in the main process)."),
        keep: int = typer.Option(1, "--keep", min=1, help="Checkpoints kept in OUT/checkpoints."),
    ) -> None:
        """Train (or fine-tune) every expert with its own optimizer and EMA; write official checkpoints."""
        from pydantic import ValidationError
        from rich.console import Console

        from mffmoe.cli import fail
        from mffmoe.errors import MFFMoEError
        from mffmoe.train.augment import parse_augmentations
        from mffmoe.train.trainer import Trainer, resolve_config

        given: dict[str, Any] = {"out": str(out)}
        options = dict(data=data, val=val, val_split=val_split, init=init, input_size=input_size, epochs=epochs,
                       batch_size=batch_size, lr=lr, min_lr=min_lr, weight_decay=weight_decay,
                       warmup_epochs=warmup_epochs, ema_decay=ema_decay, frames_per_video=frames_per_video,
                       seed=seed, amp=amp, save_every=save_every, allow_missing_ema=allow_missing_ema)
        given.update({k: v for k, v in options.items() if v is not None})
        try:
            if experts:
                given["experts"] = [n.strip() for part in experts for n in part.split(",") if n.strip()]
                import timm
                unknown = [n for n in given["experts"] if not timm.is_model(n.split(".")[0])]
                if unknown:
                    raise ConfigError(f"unknown timm model(s) {unknown}")
            if augment is not None:
                given["augment"] = list(parse_augmentations(augment))
            config = resolve_config(given, resume)
        except (MFFMoEError, ValueError) as e:
            msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()) \
                if isinstance(e, ValidationError) else str(e)
            raise fail(msg) from None
        console = Console(stderr=True)
        progress = _progress(console)
        try:
            with progress:
                trainer = Trainer(config, device=device, workers=workers, keep=keep,
                                  observer=_CliObserver(console, progress))
                result = trainer.fit(resume=resume)
        except (MFFMoEError, ValueError) as e:
            raise fail(str(e)) from None
        except KeyboardInterrupt:
            console.print(f"interrupted; continue with: mffmoe train --out {out} --resume")
            raise typer.Exit(130) from None
        last = result.records[-1] if result.records else {}
        console.print(soft_wrap=True, *[f"weights: {out} (step {result.global_step}"
                      + (f", val AUC {_fmt(last.get('val_auc'))}" if "val_auc" in last else "") + ")"
                      + (f"; best: {out / 'best'}" if (out / "best").exists() else "")
                      + f"; log: {out / 'metrics.jsonl'}"], highlight=False)
        if result.failures:
            console.print(f"[yellow]{len(result.failures)} file(s) were skipped (see the warnings above)[/]")

    @app.command()
    def evaluate(
        data: str = typer.Option(..., "--data", "-d", help="Folder with real/ and fake/, or a CSV path,label."),
        weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights dir or .safetensors file "
                                               "(default: $MFFMOE_WEIGHTS, then ./models/MFF-MoE-V1)."),
        frames: int = typer.Option(100, "--frames", "-n", min=1, help="Frames sampled per video."),
        fmt: EvalFormat = typer.Option(EvalFormat.table, "--format", "-f"),
        scores_out: Path = typer.Option(Path("scores.csv"), "--scores", help="Per-file scores CSV (per-frame "
                                        "scores of videos go to <name>_frames.csv beside it)."),
        plots: Optional[Path] = typer.Option(None, "--plots", help="Write ROC and histogram PNGs here."),
        threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="ACC threshold: FAKE iff "
                                         "score >= this."),
        fpr: float = typer.Option(0.01, "--fpr", min=0.0, max=1.0, help="Target false-positive rate for the "
                                  "reported operating threshold."),
        pooling: str = typer.Option("mean", "--pooling", help="Video pooling: mean | confident | median."),
        device: str = typer.Option("auto", "--device"),
        engine: str = typer.Option("torch", "--engine"),
        batch_size: int = typer.Option(16, "--batch-size", "-b", min=1),
        allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema"),
    ) -> None:
        """Score labelled data: ACC, AUC, EER, AP for the ensemble and each expert (frame and video level for videos).

        Exits 1 when some files failed (they are listed and left out of the metrics)."""
        from rich.console import Console

        from mffmoe.cli import fail, load_detector
        from mffmoe.errors import MFFMoEError
        from mffmoe.pooling import get_pooling
        from mffmoe.train.data import read_dataset
        from mffmoe.train.evaluate import score_items, summarize, write_scores

        err = Console(stderr=True)
        try:
            get_pooling(pooling)
            items = read_dataset(data)
        except (MFFMoEError, ValueError) as e:
            raise fail(str(e)) from None
        detector = load_detector(weights, device, False, allow_missing_ema, engine=engine, batch_size=batch_size,
                                 threshold=threshold, frames=frames, pooling=pooling)
        progress = _progress(err)
        with progress:
            task = progress.add_task("files", total=len(items), info="")
            scores = score_items(detector, items, frames=frames, pooling=pooling,
                                 progress=lambda d, t: progress.update(task, completed=d))
        report = summarize(scores, detector.info.roster, threshold, fpr)
        report["weights"] = detector.info.source
        report["scores_csv"] = [str(p) for p in write_scores(scores, scores_out, detector.info.roster, threshold)]
        if plots is not None:
            from mffmoe.train.plots import write_plots
            report["plots"] = [str(p) for p in write_plots(report, scores, plots)]
        if fmt is EvalFormat.json:
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
        else:
            from rich.console import Console as C
            _print_metrics(report, C(width=160))
            err.print(f"scores: {', '.join(report['scores_csv'])}"
                      + (f"; plots: {plots}" if plots is not None else ""), highlight=False)
        for f in report["failures"]:
            err.print(f"[red]failed:[/] {f['path']}: {f['error']['type']}: {f['error']['message']}", highlight=False)
        if report["n_failed"]:
            err.print(f"[red]{report['n_failed']} of {report['n_items']} file(s) failed and are not in the metrics[/]")
            raise typer.Exit(1)
