"""Options shared by several commands, declared once: a flag means the same thing, with the same type,
default and help, in every command that takes it. Defaults come from `mffmoe.config` and are written
as each command's parameter default (typer reads `Annotated` defaults from the signature)."""
from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Device(StrEnum):
    """Where inference (or training) runs; `cuda:N` picks one GPU (see `parse_device`)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Format(StrEnum):
    """How `analyze` and `info` print their results."""

    table = "table"
    json = "json"
    jsonl = "jsonl"


class ReportFormat(StrEnum):
    """How `evaluate` prints its one report (a single JSON object, so no jsonl)."""

    table = "table"
    json = "json"


class ExportFormat(StrEnum):
    onnx = "onnx"
    openvino = "openvino"
    all = "all"


class StoreFormat(StrEnum):
    """How `scan` stores its results (auto: .jsonl is JSONL, anything else Parquet)."""

    auto = "auto"
    parquet = "parquet"
    jsonl = "jsonl"


_CUDA_INDEX = re.compile(r"cuda:\d+")


def parse_device(value: str) -> str:
    """A `Device` name or `cuda:N`; a plain enum cannot say `cuda:1`, which training and the engines accept."""
    text = str(value)
    if text in Device.__members__ or _CUDA_INDEX.fullmatch(text):
        return text
    raise typer.BadParameter(f"{text!r} is not one of {', '.join(Device)}, cuda:N")


WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", "-w", help="Weights dir or .safetensors file (default: $MFFMOE_WEIGHTS, then ./models/MFF-MoE-V1).")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", parser=parse_device, metavar="[auto|cpu|cuda|cuda:N]", help="Where the model runs.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="torch | onnxruntime | openvino | auto: the fastest engine exported and calibrated by "
                     "`mffmoe export` for this job (else torch).")]
FramesOpt = Annotated[int, typer.Option("--frames", "-n", min=1, help="Frames sampled per video.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1,
                                       help="Images or video frames per model call.")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="FAKE iff score >= this.")]
PoolingOpt = Annotated[str, typer.Option("--pooling", help="Video pooling: mean | confident | median.")]
EarlyExitOpt = Annotated[bool, typer.Option(
    "--early-exit", help="Run experts cheapest first and stop once the label cannot change (exact label; "
                         "score given as an interval).")]
class Precision(StrEnum):
    """CPU precision of the OpenVINO engine (`mffmoe.engine.precision`)."""

    fp32 = "fp32"
    bf16 = "bf16"
    int8 = "int8"


PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="fp32 (exact, the default) | bf16 (CPUs with AVX512-BF16 or AMX) | int8 (VNNI/AMX; "
                        "graphs quantised once): faster, not exact; the measured difference from fp32 is "
                        "printed on first use and in every result's note. Refused where "
                        "the CPU lacks it.")]
# --explain (issue 15): where the evidence that moved the score lies
EXPLAIN_HELP = ("Also show where the evidence that moved the score lies: a map for each image, each face and "
                "the --explain-frames most suspicious video frames (Grad-CAM on each expert's last feature stage, "
                "or occlusion), the experts' maps combined (weighted by each expert's P(fake)) and placed on the "
                "original picture; JSON gets a 32x32 map and its peak per item. A map shows where the evidence "
                "that moved the score lies, not proof that a region was manipulated.")
ExplainOpt = Annotated[bool, typer.Option("--explain", help=EXPLAIN_HELP)]
ExplainDirOpt = Annotated[Path | None, typer.Option(
    "--explain-dir", metavar="DIR", help="Write overlay PNGs here (DIR/<input>.<frame|face>[.N].png: the original "
                                         "picture, the map, a legend and the score). Implies --explain.")]
ExplainFramesOpt = Annotated[int, typer.Option(
    "--explain-frames", min=1, max=32, metavar="K", help="Videos: explain the K most suspicious sampled frames.")]
ExplainExpertsOpt = Annotated[bool, typer.Option(
    "--explain-experts", help="Add each expert's own map to the JSON. Implies --explain.")]
ExplainMethodOpt = Annotated[str, typer.Option(
    "--explain-method", metavar="[auto|gradcam|occlusion]",
    help="gradcam: about one ensemble pass (captum; the first use of new weights converts the experts' "
         "feature graphs once); occlusion: gradient-free, any engine, about 26 passes; auto: Grad-CAM where "
         "captum is installed.")]
UntrainedOpt = Annotated[bool, typer.Option("--untrained", help="Random weights (pipeline check only).")]
AllowMissingEmaOpt = Annotated[bool, typer.Option(
    "--allow-missing-ema", help="Run on raw weights when the .state file is absent.")]
MaxPixelsOpt = Annotated[int | None, typer.Option(
    "--max-pixels", min=1, metavar="N", help="Refuse images over N pixels (width x height) as "
                                             "DecompressionBombError (default: Pillow's cap, about 179 MP).")]
CropOpt = Annotated[str | None, typer.Option(
    "--crop", metavar="[frame|faces|auto]",
    help="frame: the spec's whole frame; faces/auto: score face crops (the frame, flagged out of scope, when "
         "none is found). Default: what the weights were trained on (official: auto).")]
FaceMarginOpt = Annotated[float | None, typer.Option(
    "--face-margin", min=1.0, max=3.0, help="Face crop side / face box side (default: the weights' (train: "
                                            "--init's) trained margin, else 1.3).")]
AlignOpt = Annotated[bool | None, typer.Option(
    "--align/--no-align", help="Rotate faces upright by their eyes before cropping (default: as the weights "
                               "were trained, else off).")]
FacePoolingOpt = Annotated[str, typer.Option(
    "--face-pooling", metavar="[max|mean|largest]", help="An image's score from its faces.")]
MinFaceOpt = Annotated[int | None, typer.Option(
    "--min-face", min=8, help="Smallest face looked for, pixels (default: the weights' trained value, else "
                              "32).")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="jsonl: one JSON object per line.")]
