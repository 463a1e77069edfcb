"""How an `mffmoe` process ends. A one-shot command (analyze) asks `main` to skip the interpreter's
teardown: with torch's CUDA build that teardown faults the CUDA libraries' pages back in just to exit,
and would be the run's peak memory. atexit handlers still run and output is flushed first.

The request travels in the click context's `obj`, which only `main` sets: commands invoked any other
way (the test runner, another program embedding the app) never end the process.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import typer


@dataclass
class ProcessState:
    """Passed by `main` as the context's `obj`."""

    fast_exit: bool = False


def request_fast_exit(ctx: typer.Context) -> None:
    """Ask `main` to end the process with `exit_now` once this command returns (no-op when not under `main`)."""
    if isinstance(ctx.obj, ProcessState):
        ctx.obj.fast_exit = True


def exit_now(code: object) -> NoReturn:
    """Flush, run the atexit handlers, then end the process without the interpreter's teardown."""
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
