"""Labelled data sets, for training, evaluation and calibration: a folder with `real/` and `fake/`
subfolders, or a CSV with `path` and `label` columns. Only listing here; decoding is the detector's."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from mffmoe._util.fs import files_under
from mffmoe.errors import DatasetError

REAL, FAKE = 0, 1
LABELS = {"real": REAL, "0": REAL, "fake": FAKE, "1": FAKE}
CLASS_DIRS = {"real": REAL, "fake": FAKE}


@dataclass(frozen=True)
class LabeledPath:
    path: str
    label: int  # 0 real, 1 fake


def parse_label(value: str, where: str = "label") -> int:
    try:
        return LABELS[str(value).strip().lower()]
    except KeyError:
        raise DatasetError(f"{where}: label {value!r} is not one of real, fake, 0, 1") from None


def read_dataset(source: str | os.PathLike[str]) -> list[LabeledPath]:
    """List (path, label) pairs from a `real/` + `fake/` folder or a CSV with `path` and `label` columns
    (extra columns ignored; relative paths are relative to the CSV's folder). Files are not opened here."""
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or directory")
    if source.is_dir():
        dirs = {name: source / name for name in CLASS_DIRS if (source / name).is_dir()}
        if not dirs:
            raise DatasetError(f"{source}: expected subfolders real/ and fake/ (or pass a CSV with path,label)")
        items = [LabeledPath(str(f), CLASS_DIRS[name]) for name, d in dirs.items() for f in files_under(d)]
        if not items:
            raise DatasetError(f"{source}: real/ and fake/ hold no files")
        return items
    return _read_csv(source)


def _read_csv(path: Path) -> list[LabeledPath]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
            if "path" not in fields or "label" not in fields:
                raise DatasetError(f"{path}: a dataset CSV needs a header with columns path,label "
                                   f"(found {reader.fieldnames})")
            items = []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                rel = (row.get(fields["path"]) or "").strip()
                if not rel:
                    raise DatasetError(f"{where}: empty path")
                p = Path(rel).expanduser()
                items.append(LabeledPath(str(p if p.is_absolute() else path.parent / p),
                                         parse_label(row.get(fields["label"]) or "", where)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{path}: not a readable CSV ({e})") from e
    if not items:
        raise DatasetError(f"{path}: no rows")
    return items
