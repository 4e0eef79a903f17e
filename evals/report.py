"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone.

Each benchmark owns the block between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from finops import clock

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure here is written by a script in `bench/` (run them all with `make bench`; the evaluation
figures come from `make eval`). Each section says when and on what it was measured, and compares
against a direct call measured in the same run where the issue asks for a ratio.
"""


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str, *, path: Path = BENCHMARKS_MD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    stamp = f"_Measured {clock.now():%Y-%m-%d %H:%M} UTC on {machine()}._"
    block = f"<!-- bench:{name} -->\n{markdown.strip()}\n\n{stamp}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


SUBSET = re.compile(r"\n*<!-- subset-run -->.*?<!-- /subset-run -->\n?", re.S)


def subset_heading(markdown: str, subset: str) -> str:
    """The report with its first heading marked as a subset run (for a section of docs/benchmarks.md)."""
    lines = markdown.strip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            lines[i] = f"{line} — subset run on {subset}, not the headline figures"
            break
    return "\n".join(lines)


def write_report(path: Path, markdown: str, *, subset: str | None = None) -> None:
    """Write a generated report. A run on a subset of the evaluation data goes under its own heading at the end
    of the file and leaves the headline figures above it alone; a headline run rewrites the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if subset is None:
        path.write_text(markdown)
        return
    demoted = "\n".join("#" + line if line.startswith("#") else line for line in markdown.strip().splitlines())
    stamp = f"{clock.now():%Y-%m-%d %H:%M} UTC"
    block = (
        f"<!-- subset-run -->\n## Subset run: {subset} (not the headline figures)\n\n"
        f"_Written {stamp} by a run on {subset}; the headline figures above come from the full sets and are unchanged._\n\n"
        f"{demoted}\n<!-- /subset-run -->\n"
    )
    text = SUBSET.sub("\n", path.read_text()).rstrip() if path.exists() else ""
    path.write_text((text + "\n\n" if text else "") + block)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
