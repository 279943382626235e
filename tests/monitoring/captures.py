"""Where the real GPU captures are, and reading their values by other means than the parsers under test."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The H100 capture lives beside the repository (../shared/data/gpu-h100); the H200 one is in the repository.
SHARED_H100 = REPO.parent / "shared" / "data" / "gpu-h100"
H200 = REPO / "tests" / "data" / "gpu-h200"


def capture_dir(name: str) -> Path:
    """The capture directory for ``h100`` or ``h200``; skips saying why when the shared H100 one is absent."""
    if name == "h200":
        return H200
    if not SHARED_H100.is_dir():
        pytest.skip(f"{SHARED_H100} is absent on this machine: the shared H100 capture is not beside the "
                    "repository (its packaged copy is still tested in test_recorded.py)")
    return SHARED_H100


def csv_rows(path: Path) -> list[list[str]]:
    """The CSV's rows, cells stripped, read with the csv module."""
    with path.open(newline="") as f:
        return [[cell.strip() for cell in row] for row in csv.reader(f) if row]


def column(directory: Path) -> dict[str, int]:
    """Field name -> column, from the header of the capture's own ``--format=csv`` file."""
    header = csv_rows(directory / "query_idle.csv")[0]
    return {h.split(" [")[0]: i for i, h in enumerate(header)}


def number(cell: str) -> float:
    """A CSV cell as a float, with any unit after the space dropped ("123.31 W" -> 123.31)."""
    return float(cell.split()[0])
