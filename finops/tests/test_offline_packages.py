"""Runtime code never imports the offline packages (evals, demo, bench), not even inside a function (issue #15).

Runtime code is every module under apps/ and finops/ except tests, migrations and finops/testing (helpers
of the suite). Entry points may still *start* offline code as a process (finops/runner.py runs
`manage.py mock_llm`): a subprocess is not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ("evals", "demo", "bench")
RUNTIME = ("apps", "finops")
NOT_RUNTIME = {"tests", "migrations", "testing"}


def offline_imports(root: Path) -> list[str]:
    """`path:line module` for every import of an offline package by a runtime module under root."""
    found = []
    for top in RUNTIME:
        for path in sorted((root / top).rglob("*.py")):
            if NOT_RUNTIME & set(path.relative_to(root).parts):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                found += [
                    f"{path.relative_to(root)}:{node.lineno} {m}" for m in modules if m.split(".")[0] in OFFLINE
                ]
    return found


def test_no_runtime_module_imports_evals_demo_or_bench():
    assert offline_imports(ROOT) == []


def test_the_scan_catches_a_planted_import_inside_a_function(tmp_path):
    (tmp_path / "apps" / "ledger").mkdir(parents=True)
    (tmp_path / "finops").mkdir()
    (tmp_path / "apps" / "ledger" / "services.py").write_text("def f():\n    from demo import seed\n    return seed\n")
    (tmp_path / "finops" / "runner.py").write_text("import bench.report\n")
    (tmp_path / "apps" / "ledger" / "tests").mkdir()
    (tmp_path / "apps" / "ledger" / "tests" / "test_x.py").write_text("import evals\n")

    assert offline_imports(tmp_path) == ["apps/ledger/services.py:2 demo", "finops/runner.py:1 bench.report"]
