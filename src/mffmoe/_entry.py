"""The `mffmoe` command's first step: huge pages for large allocations, then the CLI.

The OpenVINO engine hands each expert's activation buffers back after its run, to stay within its memory
budget (`engine/openvino_engine.py`), so every run faults ~350 MB of fresh pages in. With 4 KB pages that
is about 90,000 page faults per image: measured 10-25% of the CPU time of a pass. glibc's tunable
`glibc.malloc.hugetlb=1` makes malloc ask for transparent huge pages on its large mappings, which cuts
the faults to about 2,000 at no cost in results. Tunables are read only when a process starts, so the
command re-executes itself once with it set (Linux, transparent huge pages available; about 30 ms,
before anything heavy is imported). `MFFMOE_HUGEPAGES=0` turns it off. A library user gets the same by
starting Python with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.
"""
from __future__ import annotations

import os
import sys

from mffmoe._util.hugepages import TUNABLE, tunables_with_huge_pages

__all__ = ["TUNABLE", "main", "with_huge_pages"]
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _huge_pages_available() -> bool:
    try:
        with open(THP) as f:
            mode = f.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def with_huge_pages() -> None:
    """Re-execute this process with the tunable set, where it is missing and would take effect."""
    wanted = tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))
    if wanted is None or not sys.platform.startswith("linux") or not _huge_pages_available():
        return
    os.environ["GLIBC_TUNABLES"] = wanted
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:  # cannot re-execute (unusual interpreter set-up): run as we are
        return


def main() -> None:
    with_huge_pages()
    from mffmoe.cli import main as cli_main

    cli_main()
