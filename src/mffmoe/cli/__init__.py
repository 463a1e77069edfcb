"""The `mffmoe` command: one module per command, the shared options in `options.py`, what is printed in
`output.py`. Commands are thin: they parse options, build the library's settings (a `DetectorConfig`,
`ServerSettings`, `ScanOptions`) and call the library, which never imports this package.

Expected errors (`MFFMoEError`) print one line, never a traceback. Importing this package stays light
(no torch, timm or FastAPI) so that `mffmoe --help` is fast; commands import what they need.
"""
from __future__ import annotations

import sys

import typer

from mffmoe.cli.analyze import analyze
from mffmoe.cli.evaluate import evaluate
from mffmoe.cli.export import export
from mffmoe.cli.output import err
from mffmoe.cli.process import ProcessState, exit_now
from mffmoe.cli.sample import sample
from mffmoe.cli.scan import scan
from mffmoe.cli.serve import serve
from mffmoe.cli.train import train
from mffmoe.cli.weights import convert, info
from mffmoe.errors import MFFMoEError

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MFF-MoE V1 deepfake detector for images and videos.")
app.command("analyze")(analyze)
app.command("info")(info)
app.command("convert")(convert)
app.command("sample")(sample)
app.command("export")(export)
app.command("serve")(serve)
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("scan")(scan)


def main() -> None:
    """The `mffmoe` entry point."""
    state = ProcessState()
    try:
        app(obj=state)
    except SystemExit as e:
        if state.fast_exit:
            exit_now(e.code)
        raise
    except MFFMoEError as e:  # anything the commands did not catch themselves
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
