"""Docs that cannot drift: every figure in README.md and docs/ is generated or checked by key against its output,
no path they name is dead, no file cites a document outside the repository, and ADR statuses match the code."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.doc_numbers import ROOT, checked_files, figures, problems, strip_generated

ADR = ROOT / "docs" / "adr"
RUNBOOK_PAGE = Path("docs/runbook/FinopsAnomalyScanStale.md")


def assert_docs_current(root: Path = ROOT) -> None:
    found = problems(root)
    assert found == [], (
        "stale or unsourced figures, or dead paths, in README.md / docs/ (re-run make bench / make eval, then fix the "
        "figure, its <!--@ source --> marker or the path; `make docs-check` lists them):\n" + "\n".join(found)
    )


def test_the_checker_sees_the_figures_it_must_check():
    marked = [
        fig
        for path in checked_files()
        for fig in figures(strip_generated(path, path.read_text()))
        if fig.marker and not fig.marker.startswith("example")
    ]
    assert len(marked) >= 150  # the ADRs, runbook and README quote their figures by key; a checker that finds none checks nothing
    sources = {fig.marker.split()[0] for fig in marked}
    assert {"bench:budgets", "bench:gateway", "bench:anomalies", "router-eval", "chaos", "setting"} <= sources


def test_every_figure_in_readme_and_docs_is_current_and_every_path_exists():
    assert_docs_current()


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """A copy of README.md and docs/ beside links to the code, bench and deploy files the markers name."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    for png in (ROOT / "docs").rglob("*.png"):  # links to screenshots must still resolve
        (tmp_path / png.relative_to(ROOT)).symlink_to(png)
    for name in ("apps", "bench", "demo", "evals", "finops", "deploy", "fixtures", "templates", "Makefile", "compose.yml", "Dockerfile", ".env.example"):
        (tmp_path / name).symlink_to(ROOT / name)
    assert problems(tmp_path) == []  # the copy is as current as the checkout
    return tmp_path


def _plant(root: Path, path: Path, old: str, new: str) -> None:
    page = root / path
    text = page.read_text()
    assert old in text
    page.write_text(text.replace(old, new, 1))


def test_a_stale_figure_planted_in_a_runbook_page_fails_the_check(docs_copy):
    # The bench says the whole scan takes 2.21 s at p50; an older page said 3.82 s.
    _plant(docs_copy, RUNBOOK_PAGE, '-->2.21 s p50', '-->3.82 s p50')
    with pytest.raises(AssertionError, match=r"FinopsAnomalyScanStale\.md:\d+: 3\.82 s: bench:anomalies"):
        assert_docs_current(docs_copy)


def test_a_figure_without_a_source_planted_in_a_runbook_page_fails_the_check(docs_copy):
    _plant(docs_copy, RUNBOOK_PAGE, "## Mitigation", "The scan usually takes ~4 s.\n\n## Mitigation")
    with pytest.raises(AssertionError, match=r"FinopsAnomalyScanStale\.md:\d+: ~4 s: no source"):
        assert_docs_current(docs_copy)


def test_a_dead_path_and_a_file_outside_the_repository_fail_the_check(docs_copy):
    _plant(docs_copy, Path("docs/sql/README.md"), "demo/tests/test_seed_demo.py", "demo/tests/test_sql_dashboards.py")
    _plant(docs_copy, RUNBOOK_PAGE, "## Mitigation", "See ARCHITECTURE §3.\n\n## Mitigation")
    with pytest.raises(AssertionError) as failed:
        assert_docs_current(docs_copy)
    assert "no such file demo/tests/test_sql_dashboards.py" in str(failed.value)
    assert "cites a file outside the repository" in str(failed.value)


def test_make_docs_check_exits_non_zero_on_a_stale_figure(docs_copy):
    _plant(docs_copy, RUNBOOK_PAGE, '-->2.21 s p50', '-->3.82 s p50')
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "doc_numbers.py"), "--root", str(docs_copy)], capture_output=True, text=True)
    assert run.returncode == 1 and "3.82 s" in run.stdout
    clean = subprocess.run([sys.executable, str(ROOT / "bench" / "doc_numbers.py")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout


def test_no_source_file_cites_a_document_outside_the_repository():
    cited = []
    for path in [*ROOT.glob("*.md"), *(p for d in ("apps", "bench", "finops", "deploy", "docs", "templates") for p in (ROOT / d).rglob("*"))]:
        if path.suffix not in {".py", ".md", ".yml", ".yaml", ".html", ".txt"} or path.name in {"doc_numbers.py", "test_docs.py"}:
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"ARCHITECTURE(\.md)?\s*§|\.\./shared/ARCHITECTURE", line):
                cited.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert cited == []


# ---- ADRs ---------------------------------------------------------------------------------------------------


def adrs() -> dict[str, tuple[Path, str]]:
    """ADR number → (file, status word)."""
    out = {}
    for path in sorted(ADR.glob("[0-9][0-9][0-9]-*.md")):
        if path.name.startswith("000-"):
            continue
        status = re.search(r"^- \*\*Status:\*\* (\w+)", path.read_text(), re.M)
        assert status, path.name
        out[path.name[:3]] = (path, status.group(1))
    return out


def test_adr_statuses_are_known_and_the_indexes_list_every_adr_with_its_status():
    records = adrs()
    assert {status for _, status in records.values()} <= {"Accepted", "Proposed", "Deprecated", "Superseded"}
    index = (ADR / "README.md").read_text()
    for number, (path, status) in records.items():
        row = re.search(rf"^\| \[{number}\]\({re.escape(path.name)}\) \|.*\| (?:\*\*)?(\w+)", index, re.M)
        assert row, f"ADR {number} is missing from docs/adr/README.md"
        assert row.group(1) == status, f"ADR {number}: {status} in the record, {row.group(1)} in docs/adr/README.md"
    assert f"001–{max(records)}" in (ROOT / "docs" / "README.md").read_text()


def _code_text() -> str:
    return "\n".join(p.read_text() for d in ("apps", "finops") for p in (ROOT / d).rglob("*.py") if "tests" not in p.parts)


def test_adr_statuses_match_the_code():
    code = _code_text()
    for number, (path, status) in adrs().items():
        text = path.read_text()
        if status == "Proposed":
            # A proposal names what it would add; once that exists in the code, the record must say Accepted.
            missing = re.search(r"^- \*\*Not built yet:\*\* (.*(?:\n  .*)*)", text, re.M)
            assert missing, f"ADR {number} is Proposed but names nothing it would build (`- **Not built yet:**`)"
            names = re.findall(r"`([^`]+)`", missing.group(1))
            assert names, number
            built = [name for name in names if name in code]
            assert built == [], f"ADR {number} is Proposed, but the code has {built}: update its status"
        else:
            # An accepted or deprecated record names the code that implements it (or keeps its baseline).
            code_line = re.search(r"^- \*\*Code[^:]*:\*\* (.*(?:\n  .*)*)", text, re.M)
            assert code_line, f"ADR {number} names no code"
            paths = [p for p in re.findall(r"`([\w./-]+\.py)`", code_line.group(1))]
            assert paths and all((ROOT / p).exists() for p in paths), f"ADR {number}: {paths}"



def test_the_adr_template_and_every_adr_have_alternatives_and_how_we_would_know_we_were_wrong():
    for path in [ADR / "000-template.md", *(p for p, _ in adrs().values())]:
        headings = re.findall(r"^## (.+)$", path.read_text(), re.M)
        assert "Alternatives considered" in headings, path.name
        assert "How we'll know we were wrong" in headings, path.name
        for heading in ("Alternatives considered", "How we'll know we were wrong"):
            body = path.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
            assert len(body.strip()) >= 150, f"{path.name}: section {heading!r} is a stub"
