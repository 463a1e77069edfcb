"""The `mffmoe` command: one module per command, the shared options in `options.py`, what is printed in
`output.py`. Commands are thin: they parse options, build the library's settings (a `DetectorConfig`,
`ServerSettings`, `ScanOptions`) and call the library, which never imports this package.

Expected errors (`MFFMoEError`) print one line, never a traceback. Importing this package stays light
(no torch, timm or FastAPI) so that `mffmoe --help` is fast; commands import what they need.
"""
from __future__ import annotations

import sys

import typer

from mffmoe.cli import analyze, calibrate, evaluate, export, report, sample, scan, serve, train, verify, weights
from mffmoe.cli.output import err, print_error
from mffmoe.cli.process import ProcessState, exit_now
from mffmoe.errors import MFFMoEError

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="MFF-MoE V1 deepfake detector for images and videos.")
app.command("analyze")(analyze.analyze)
app.command("info")(weights.info)
app.command("convert")(weights.convert)
app.command("verify")(verify.verify)
app.command("sample")(sample.sample)
app.command("export")(export.export)
app.command("serve")(serve.serve)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("calibrate")(calibrate.calibrate)
app.command("scan")(scan.scan)
app.add_typer(report.report_app, name="report")
app.command("keygen")(report.keygen)


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
        print_error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
