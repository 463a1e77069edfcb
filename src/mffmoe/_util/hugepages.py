"""glibc's huge-page tunable for large allocations, shared by the `mffmoe` command (`mffmoe._entry`)
and the Ray scan's workers: why it matters is in `mffmoe/_entry.py`. Standard library only, so that the
command can use it before anything heavy is imported."""
from __future__ import annotations

import os

TUNABLE = "glibc.malloc.hugetlb=1"


def tunables_with_huge_pages(current: str) -> str | None:
    """GLIBC_TUNABLES with the tunable added, or None when it is there already or MFFMOE_HUGEPAGES=0."""
    if "glibc.malloc.hugetlb" in current or os.environ.get("MFFMOE_HUGEPAGES", "1") == "0":
        return None
    return f"{current}:{TUNABLE}" if current else TUNABLE
