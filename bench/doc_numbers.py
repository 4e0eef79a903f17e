"""Every measured figure quoted in the ADRs and the README must come from a `make bench` / `make eval` output.

    .venv/bin/python bench/doc_numbers.py        # lists figures with no source; exit 1 if any

A *figure* is a number with a unit (ms, s, req/s, %, ×, MB, GB) or a dollar amount, outside code blocks,
not a bound (preceded by ≤, ≥, <, >, "target", "under", "over", "at most", "at least") and not a date.
Its *source* is one of the files the benchmarks and evaluations write (below). Configuration values
quoted in prose (the 50 ms budget deadline, 30 requests a minute, the 0.92 threshold) are not measured:
they are accepted when they appear in `finops/settings.py`, with their default.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# What quotes figures (ARCHITECTURE-level docs that must stay true to the measurements).
CHECKED = sorted((DOCS / "adr").glob("[0-9][0-9][0-9]-*.md"))
CHECKED = [p for p in CHECKED if not p.name.startswith("000-")] + [ROOT / "README.md"]

# What `make bench` and `make eval` write.
SOURCES = [
    DOCS / "benchmarks.md",  # make bench (every bench_*.py) and make eval (cache, router sections)
    DOCS / "router-eval.md",  # make eval: eval_router
    DOCS / "anomaly-eval.md",  # make eval: eval_anomalies
    DOCS / "cache-threshold-runbook.md",  # make eval: eval_cache
    DOCS / "cost-model" / "README.md",  # make eval: cost_model --refresh --reconcile
    DOCS / "reliability.md",  # make chaos / make soak
]
CONFIG = [ROOT / "finops" / "settings.py", ROOT / "finops" / "conf.py"]  # conf.py: every FINOPS default

NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
FIGURE = re.compile(
    rf"(?P<dollar>\$\s?)?(?P<num>{NUMBER})\s?(?P<unit>ms\b|s\b|req/s|requests/s|%|×|x\b|MB\b|GB\b)?",
)
BOUND = re.compile(r"(≤|≥|<|>|~|≈|target|under|over|at most|at least|within|up to|every|per|±)\s*\$?\s*$", re.I)


def figures(text: str):
    """(line number, figure as written, number) for each figure outside fenced code and inline code."""
    in_fence = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line)  # inline code: names, not figures
        line = re.sub(r"\]\([^)]*\)", "]", line)  # link targets
        for m in FIGURE.finditer(line):
            num, unit, dollar = m.group("num"), m.group("unit"), m.group("dollar")
            if not unit and not dollar:
                continue
            start = m.start()
            if start and (line[start - 1].isalnum() or line[start - 1] in "-./:"):
                continue  # part of a name, version or date (py3.11, 2026-11-27, ADR-005)
            if re.match(r"\d{4}-\d{2}", line[m.start("num") :]):
                continue
            if BOUND.search(line[max(0, start - 12) : start]):
                continue  # a target or a bound, not a measurement
            if unit in ("x", "s") and "." not in num and int(num.replace(",", "")) < 10:
                continue  # "2 s" windows, "3x" factors in prose: too short to mean anything alone
            yield lineno, m.group(0).strip(), num


def _variants(num: str) -> set[str]:
    plain = num.replace(",", "")
    out = {num, plain}
    if "." in plain:
        whole, frac = plain.split(".")
        out.add(f"{int(whole):,}.{frac}")
    else:
        out.add(f"{int(plain):,}")
    return out


def unsourced() -> list[str]:
    corpus = "\n".join(p.read_text() for p in SOURCES if p.exists())
    config = "\n".join(p.read_text() for p in CONFIG)
    missing = []
    for path in CHECKED:
        for lineno, shown, num in figures(path.read_text()):
            found = any(re.search(rf"(?<![\d.,]){re.escape(v)}(?![\d]|\.\d)", corpus + "\n" + config) for v in _variants(num))
            if not found:
                missing.append(f"{path.relative_to(ROOT)}:{lineno}: {shown}")
    return missing


def main() -> int:
    missing = unsourced()
    for line in missing:
        print(line)
    checked = ", ".join(str(p.relative_to(ROOT)) for p in CHECKED)
    print(f"{len(missing)} figure(s) without a source in the bench/eval outputs (checked: {checked})", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
