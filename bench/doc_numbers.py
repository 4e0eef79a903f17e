"""Docs that cannot drift: every figure in README.md and docs/ is generated, or checked by key against its output.

    .venv/bin/python bench/doc_numbers.py        # lists stale or unsourced figures and dead paths; exit 1 if any

A *figure* is a number with a unit (ms, s, µs, req/s, %, ×, MB, GB, MiB, k and M for thousands and millions),
a dollar amount, a count of
things (135 requests, 8 tenants, 720 summary keys), a number with thousands separators, a decimal with two or more places, or each number of a slash list that ends in a unit
("0.300 / 0.412 / 0.476 ms") — outside fenced and inline code, link targets and dates. Numbers written after
"~" are figures too. A figure that is a bound (after ≤, ≥, <, >, "target", "at most", "at least", "up to",
"within") is a requirement, not a measurement, and is not checked.

Each figure is accepted in one of two ways:

1. It sits in a **generated region**: a whole file a command writes (`GENERATED_FILES`), or a block between
   markers that a script rewrites (`<!-- bench:NAME -->` in docs/benchmarks.md, `<!-- CHAOS:BEGIN -->` and
   `<!-- SOAK:BEGIN -->` in docs/reliability.md).
2. It is preceded by a **source marker**, an HTML comment that names the output and the key it comes from:

       <!--@ bench:anomalies "full `anomaly_scan`" p50 -->2.21 s
       <!--@ bench:budgets "reserve, asyncpg, three tiers" p50|p95|p99 -->0.300 / 0.412 / 0.476 ms
       <!--@ chaos "Postgres unreachable for 15 s" -->135
       <!--@ router-eval "MMLU (n = » confidence" APGR -->0.500     (the row under the heading "MMLU (n = …")
       <!--@ setting FINOPS_BUDGET_TIMEOUT_MS -->50 ms
       <!--@ file:docs/sla.yaml "target: 0.999" -->99.9 %
       <!--@ example -->$1.00        (a worked example's input, not a measurement)

   The source is a generated block (`bench:NAME`, `chaos`, `soak`), a generated file (`router-eval`,
   `anomaly-eval`, `cache-eval`, `cost-model`), a repository file (`file:PATH`), or `setting NAME` (the
   default in finops/settings.py). The quoted key selects exactly one table row or prose line of the source
   (markdown emphasis and backticks ignored; a key holding a double quote is written in single quotes); the optional columns (`|`-separated, one per number of the
   figure) select cells of that row by header. The figure must equal a number of the selected text at the
   precision it is written with (`~` figures: within 5 %); for YAML and Python sources the number may be
   written as a fraction (0.999 → 99.9 %), as a product (a burn rate × the error budget, 14.4 * 0.001 → 1.44 %), as 1 − target (0.999 → 0.1 %), in seconds (0.06 → 60 ms; 900 → 15 min) or in bytes (→ MiB).

Paths are checked too: every relative link target, and every repository path in the text
(`apps/…/x.py`, `docs/…`), must exist; no document or module cites a file outside the repository.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Whole files written by a command (make eval): every figure in them is generated.
GENERATED_FILES = {
    "router-eval": DOCS / "router-eval.md",  # manage.py eval_router
    "anomaly-eval": DOCS / "anomaly-eval.md",  # manage.py eval_anomalies
    "cache-eval": DOCS / "cache-threshold-runbook.md",  # manage.py eval_cache
    "cost-model": DOCS / "cost-model" / "README.md",  # manage.py cost_model --refresh --reconcile
}
# Blocks a script rewrites inside a file that also has hand-written prose.
GENERATED_BLOCKS = [
    (DOCS / "benchmarks.md", re.compile(r"<!-- bench:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /bench:(?P=name) -->", re.S), "bench:{}"),
    (DOCS / "reliability.md", re.compile(r"<!-- (?P<name>CHAOS|SOAK):BEGIN -->(?P<body>.*?)<!-- (?P=name):END -->", re.S), "{}"),
]


def checked_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/ (ADRs, runbook, benchmarks, evaluations, SQL notes)."""
    docs = root / "docs"
    return [root / "README.md"] + sorted(docs.rglob("*.md"))


NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
UNIT = r"ms\b|µs\b|s\b|req/s|requests/s|%|×|x\b|MB\b|GB\b|MiB\b|k\b|M\b"  # k, M: thousands, millions (12.6k, 1.5M)
GROUP = re.compile(
    rf"(?P<approx>[~≈]\s?)?(?P<dollar>[+−-]?\$\s?)?(?P<nums>(?:(?:{NUMBER})\s?/\s?)*(?:{NUMBER}))(?:\s?(?P<unit>{UNIT}))?"
)
BOUND = re.compile(r"(≤|≥|<|>|\btarget|at most|at least|up to|within|limit)\s*[~+]?\$?\s*$", re.I)
COUNT = re.compile(  # "135 requests", "8 tenants": counts of what was measured or configured are figures too
    r"\s+(?:requests?|rows?|prompts?|pairs?|files?|incidents?|users?|tenants?|served|tokens?|exemplars|scopes|streams"
    r"|decisions|hard negatives|summary keys|scans?)\b"
)
VERSION = re.compile(r"(Python|FOCUS|Postgres(?:QL)?|Redis|version|v)\s?$", re.I)
MARKER = re.compile(r"<!--@\s*(?P<spec>.*?)\s*-->")
SPEC = re.compile(r'^(?P<source>example|setting\s+\S+|[\w:./-]+)(?:\s+(?:"(?P<key>[^"]+)"|\'(?P<key1>[^\']+)\'))?(?:\s+(?P<cols>\S.*))?$')


@dataclass
class Figure:
    lineno: int
    shown: str
    numbers: list[str]
    approx: bool
    unit: str
    marker: str | None  # the marker's spec, when one precedes the figure


def _blank(match: re.Match) -> str:
    return "\n" * match.group(0).count("\n")


def strip_generated(path: Path, text: str) -> str:
    """The text with generated blocks blanked (line numbers kept)."""
    for file, pattern, _ in GENERATED_BLOCKS:
        if path.resolve() == file.resolve():
            text = pattern.sub(_blank, text)
    return text


def figures(text: str):
    """Each figure outside fenced code, inline code and link targets, with the source marker before it."""
    in_fence = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        markers = {m.end() - 1: m.group("spec") for m in MARKER.finditer(raw)}  # the marker's last column → spec
        line = MARKER.sub(lambda m: " " * len(m.group(0)), raw)
        line = re.sub(r"<!--.*?-->", lambda m: " " * len(m.group(0)), line)  # other comments
        line = re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line)  # inline code: names, not figures
        line = re.sub(r"\]\([^)]*\)", lambda m: "]" + " " * (len(m.group(0)) - 1), line)  # link targets
        line = re.sub(r"\*\*", "  ", line)
        for m in GROUP.finditer(line):
            nums = re.findall(NUMBER, m.group("nums"))
            unit, dollar = m.group("unit"), m.group("dollar")
            start = m.start()
            if start and (line[start - 1].isalnum() or line[start - 1] in "-./:_#"):
                continue  # part of a name, version or date (py3.11, 2026-11-27, ADR-005)
            if re.match(r"\d{4}-\d{2}", line[m.start("nums") :]) or re.match(r"\d{1,2}:\d{2}", line[m.start("nums") :]):
                continue  # dates and clock times
            end = m.end()
            if end < len(line) and (line[end].isalnum() or line[end] in "-_"):
                if not unit:
                    continue  # 5-fold, 3x3, 429s
            first = nums[0]
            significant = (
                bool(unit or dollar) or "," in first or re.search(r"\.\d\d", first) or COUNT.match(line[m.end() :])
            )
            if not significant:
                continue
            if unit == "s" and not re.search(r"\s", m.group(0)[len(m.group("nums")) - len(nums[-1]) :]) and "." not in nums[-1]:
                continue  # "429s" (status codes in the plural), not seconds
            if re.search(r"\bper\s*$", line[max(0, start - 6) : start]):
                continue  # "per 1M tokens": a unit of a rate, not a figure
            if VERSION.search(line[max(0, start - 12) : start]):
                continue  # Python 3.11, FOCUS 1.2, OpenSLO v1
            if BOUND.search(line[max(0, start - 14) : start]):
                continue  # a target or a bound, not a measurement
            marker = None
            for pos, spec in markers.items():
                if pos < start and not line[pos + 1 : start].strip(" +−-~≈"):
                    marker = spec
            if dollar and all(Decimal(n.replace(",", "")) == 0 for n in nums) and not unit:
                continue  # "never $0": a policy, not a measurement
            yield Figure(lineno, m.group(0).strip(), nums, bool(m.group("approx")), unit or ("$" if dollar else ""), marker)


# ---- sources -----------------------------------------------------------------------------------------------


def _plain(text: str) -> str:
    return re.sub(r"\*\*|`", "", text)


def source_text(source: str, root: Path = ROOT) -> str | None:
    if source in GENERATED_FILES:
        path = root / GENERATED_FILES[source].relative_to(ROOT)
        return path.read_text() if path.exists() else None
    if source.startswith("file:"):
        path = root / source[5:]
        return path.read_text() if path.is_file() else None
    for file, pattern, fmt in GENERATED_BLOCKS:
        path = root / file.relative_to(ROOT)
        if not path.exists():
            continue
        for m in pattern.finditer(path.read_text()):
            if fmt.format(m.group("name")).lower() == source.lower():
                return m.group("body")
    return None


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in _plain(line).strip().strip("|").split("|")]


def _section(text: str, heading: str) -> str | None:
    """The part of text under the one heading that contains `heading`, up to the next heading of its level or above."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("#") and heading in _plain(line)]
    if len(starts) != 1:
        return None
    level = len(lines[starts[0]]) - len(lines[starts[0]].lstrip("#"))
    out = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            break
        out.append(line)
    return "\n".join(out)


def select(text: str, key: str, cols: list[str]) -> tuple[str | None, str]:
    """The selected row's cells (NUL-separated) or line; (None, why) when the key selects nothing or several.

    A table row is selected when its first cell contains the key, or its cells joined by " | " start with it
    ("0.92 | on"); a prose line when it contains the key. "HEADING » KEY" looks only under that heading.
    """
    if " » " in key:
        heading, key = key.split(" » ", 1)
        scoped = _section(text, heading)
        if scoped is None:
            return None, f'no single heading contains "{heading}"'
        text = scoped
    header: list[str] = []
    hits: list[tuple[str, list[str], list[str]]] = []  # (line, cells, header)
    previous_table = False
    for line in text.splitlines():
        plain = _plain(line)
        if line.lstrip().startswith("|"):
            cells = _split_row(line)
            if not previous_table:
                header = cells
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells if c) and (
                key in cells[0] or " | ".join(cells).startswith(key)
            ):
                hits.append((plain, cells, header))
            previous_table = True
            continue
        previous_table = False
        if key in plain:
            hits.append((plain, [], []))
    if not hits:
        return None, f'no row or line contains "{key}"'
    if len(hits) > 1:
        exact = [h for h in hits if h[1] and (h[1][0] == key or " | ".join(h[1]).startswith(key + " |"))]
        if len(exact) != 1:
            return None, f'"{key}" is ambiguous ({len(hits)} rows/lines)'
        hits = exact
    line, cells, head = hits[0]
    if not cols:
        return line, ""
    if not cells:
        return None, f'"{key}" is a prose line; columns {cols} need a table row'
    out = []
    for col in cols:
        matches = [i for i, h in enumerate(head) if h.lower() == col.lower()] or [
            i for i, h in enumerate(head) if col.lower() in h.lower()
        ]
        if len(matches) != 1 or matches[0] >= len(cells):
            return None, f'column "{col}" not found (or ambiguous) in the table of "{key}"'
        out.append(cells[matches[0]])
    return "\x00".join(out), ""


def _matches(shown: str, value: str, *, approx: bool, scaled: bool, magnitude: int = 1) -> bool:
    try:
        want = Decimal(shown.replace(",", ""))
        have = Decimal(value.replace(",", ""))
    except InvalidOperation:
        return False
    places = len(shown.split(".")[1]) if "." in shown else 0
    candidates = [have] + ([have * 100, have * 1000, have / 60, have / 1048576] if scaled else [])
    if magnitude != 1:  # the figure is written in thousands or millions: "12.6k" for 12,656
        candidates += [have / magnitude]
    for v in candidates:
        if approx and v and abs(v - want) <= abs(v) * Decimal("0.05"):
            return True
        if v.quantize(Decimal(1).scaleb(-places)) == want if places else round(v) == want:
            return True
    return False


def check_figure(fig: Figure, root: Path = ROOT) -> str | None:
    """None when the figure's marker resolves and agrees; else why not."""
    if fig.marker is None:
        return "no source: put it in a generated block, or name its source with <!--@ SOURCE \"KEY\" -->"
    spec = SPEC.match(fig.marker)
    if not spec:
        return f"unreadable marker <!--@ {fig.marker} -->"
    source, key, cols = spec.group("source"), spec.group("key") or spec.group("key1"), spec.group("cols")
    if source == "example":
        return None
    if source.startswith("size:"):  # a vendored file's size, in MB (10^6) or MiB, kB or KiB
        target = root / source[5:]
        if not target.is_file():
            return f"no such file {source[5:]}"
        size = Decimal(target.stat().st_size)
        sizes = [str(size / d) for d in (1000000, 1048576, 1000, 1024)]
        if any(_matches(fig.numbers[0], v, approx=fig.approx, scaled=False) for v in sizes):
            return None
        return f"{source[5:]} is {size} bytes"
    if source.startswith("setting"):
        # A FINOPS_<NAME> default is the field <name> of finops/conf.py's FinopsConf (the one place defaults live);
        # other settings (REDIS_URL, …) are in finops/settings.py.
        name = source.split()[1]
        field = name.removeprefix("FINOPS_").lower()
        if name.startswith("FINOPS_") and re.search(rf"^\s+{field}: ", (root / "finops" / "conf.py").read_text(), re.M):
            source, key = "file:finops/conf.py", f"    {field}: "
        else:
            source, key = "file:finops/settings.py", f'"{name}"'
    text = source_text(source, root)
    if text is None:
        return f"source {source} not found"
    if not key:
        return "the marker names no key"
    columns = [c.strip() for c in cols.split("|")] if cols else []
    if columns and len(columns) not in (1, len(fig.numbers)):
        return f"{len(columns)} columns for {len(fig.numbers)} numbers"
    selected, why = select(text, key, columns)
    if selected is None:
        return f"{source}: {why}"
    scaled = source.endswith((".yaml", ".yml", ".py"))
    for i, shown in enumerate(fig.numbers):
        cell = selected.split("\x00")[i if len(columns) > 1 else 0]
        found = re.findall(NUMBER, cell)
        if scaled:  # rules and SLOs: a burn rate times the error budget ("14.4 * 0.001"), and 1 − target
            found += [str(Decimal(a) * Decimal(b)) for a, b in re.findall(r"(\d+(?:\.\d+)?)\s*\*\s*(\d+(?:\.\d+)?)", cell)]
            found += [str(1 - Decimal(v)) for v in re.findall(r"target:\s*(0\.\d+)", cell)]
        magnitude = {"k": 1000, "M": 1000000}.get(fig.unit, 1)
        if not any(_matches(shown, v, approx=fig.approx, scaled=scaled, magnitude=magnitude) for v in found):
            return f'{source} "{key}"{" " + columns[i if len(columns) > 1 else 0] if columns else ""} says {cell.strip()[:120]!r}'
    return None


# ---- paths -------------------------------------------------------------------------------------------------

TOP = r"(?:apps|bench|demo|docs|deploy|evals|finops|fixtures|templates)"
REPO_PATH = re.compile(rf"(?<![\w./-]){TOP}/(?:[\w.*-]+/)*(?:[\w*-]+(?:\.[\w*]+)+|)(?![\w/])")  # full.jsonl.gz whole
OUTSIDE = re.compile(r"ARCHITECTURE(?:\.md)?\s*§|\.\./shared/ARCHITECTURE|ARCHITECTURE\.md")


def dead_paths(path: Path, text: str, root: Path = ROOT) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"\]\(([^)\s]+)\)", line):
            target = m.group(1).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            if not (path.parent / target).exists():
                out.append(f"{path.relative_to(root)}:{lineno}: dead link {m.group(1)}")
        for m in REPO_PATH.finditer(line):
            ref = m.group(0).rstrip(".")
            if any(ch in ref for ch in "<>{}") or "NNN" in ref:
                continue
            if "*" in ref:
                if not list(root.glob(ref)):
                    out.append(f"{path.relative_to(root)}:{lineno}: nothing matches {ref}")
            elif not (root / ref).exists():
                out.append(f"{path.relative_to(root)}:{lineno}: no such file {ref}")
        if OUTSIDE.search(line):
            out.append(f"{path.relative_to(root)}:{lineno}: cites a file outside the repository ({OUTSIDE.search(line).group(0)})")
    return out


# ---- the check ---------------------------------------------------------------------------------------------


def problems(root: Path = ROOT) -> list[str]:
    """Every stale or unsourced figure and every dead path reference in the checked docs."""
    out = []
    generated = {(root / p.relative_to(ROOT)).resolve() for p in GENERATED_FILES.values()}
    for path in checked_files(root):
        text = path.read_text()
        out += dead_paths(path, text, root)
        if path.resolve() in generated:
            continue
        blocks_root = {f.relative_to(ROOT) for f, _, _ in GENERATED_BLOCKS}
        if path.relative_to(root) in blocks_root:
            text = strip_generated(ROOT / path.relative_to(root), text)
        for fig in figures(text):
            why = check_figure(fig, root)
            if why:
                out.append(f"{path.relative_to(root)}:{fig.lineno}: {fig.shown}: {why}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="a checkout (or a copy of README.md and docs/) to check")
    found = problems(parser.parse_args(argv).root.resolve())
    for line in found:
        print(line)
    print(f"{len(found)} stale or unsourced figure(s) and dead path(s) in README.md and docs/", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
