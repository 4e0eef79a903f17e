"""The layer contract (finops/contracts.py) on the real tree, and proof that it catches what it must."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

from finops import contracts
from finops.contracts import LAYERS, Layer, check, package_cycles

ROOT = Path(__file__).resolve().parents[2]


def _copy_runtime_tree(destination: Path) -> Path:
    for top in contracts.RUNTIME_ROOTS:
        shutil.copytree(ROOT / top, destination / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "templates", "static"))
    return destination


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if str(parent) != ".":
            (root / parent / "__init__.py").touch()
    path.write_text(textwrap.dedent(source))


def test_the_runtime_tree_keeps_the_layer_contract(capsys):
    violations = check(ROOT)
    with capsys.disabled():
        sys.stdout.write(f"\n{len(violations)} layer violation(s):\n" + "".join(f"  {v}\n" for v in violations))
    assert violations == [], "\n".join(map(str, violations))


def test_no_import_cycle_between_packages(capsys):
    report = contracts.cycle_report(ROOT)
    with capsys.disabled():
        sys.stdout.write("\nimport cycles between packages:\n" + "".join(f"  {line}\n" for line in report) if report else "")
    assert package_cycles(ROOT) == [], "\n".join(report)


def test_a_planted_forbidden_import_is_reported(tmp_path):
    """On a copy of the real tree: an upward import inside a function, a sibling import and an offline import."""
    tree = _copy_runtime_tree(tmp_path)
    before = {str(v).split(" [")[0] for v in check(tree)}
    with (tree / "apps" / "ledger" / "selectors.py").open("a") as f:
        f.write("\n\ndef _planted():\n    from apps.gateway.pipeline import chat  # noqa\n    return chat\n")
    with (tree / "apps" / "cache" / "keys.py").open("a") as f:
        f.write("\nimport apps.budgets.services  # noqa\nfrom bench import report  # noqa\n")
    after = {str(v).split(" [")[0] for v in check(tree)}
    assert after - before == {
        "upward: apps.ledger.selectors imports apps.gateway.pipeline.chat (inside a function)",
        "sibling: apps.cache.keys imports apps.budgets.services",
        "offline: apps.cache.keys imports bench.report",
    }


def test_the_contract_rules_on_a_small_tree(tmp_path):
    layers = (Layer("core", ("core",)), Layer("low", ("low",)), Layer("mid", ("left", "right")), Layer("top", ("top",)))
    _write(tmp_path, "core/clock.py", "import datetime\n")
    _write(tmp_path, "low/services.py", "from core import clock\nfrom . import models\n")
    _write(tmp_path, "low/models.py", "")
    _write(tmp_path, "left/services.py", "from low.services import x\n\ndef f():\n    import importlib\n    importlib.import_module('right.api')\n")
    _write(tmp_path, "right/api.py", "from ..top import views\n")
    _write(tmp_path, "top/views.py", "from left.services import f\nfrom right import api\nimport evals.runner\n")
    _write(tmp_path, "low/tests/test_services.py", "import top.views\n")  # tests are not checked
    _write(tmp_path, "low/migrations/0001_initial.py", "import top.views\n")  # nor migrations
    roots = ("core", "low", "left", "right", "top")
    found = sorted(
        (v.kind, v.site.module, v.site.target, v.site.in_function)
        for v in check(tmp_path, layers=layers, offline=("evals",), roots=roots)
    )
    assert found == [
        ("offline", "top.views", "evals.runner", False),
        ("sibling", "left.services", "right.api", True),
        ("upward", "right.api", "top.views", False),
    ]


def test_a_cycle_between_packages_is_reported(tmp_path):
    layers = (Layer("core", ("core",)), Layer("apps", ("a", "b", "c")))
    _write(tmp_path, "a/x.py", "from b import y\n")
    _write(tmp_path, "b/y.py", "def f():\n    from c import z\n")  # inside a function: still an edge
    _write(tmp_path, "c/z.py", "import a.x\nimport core\n")
    _write(tmp_path, "core/__init__.py", "")
    graph = contracts.package_graph(tmp_path, layers=layers, offline=(), roots=("a", "b", "c", "core"))
    assert contracts.cycles(graph) == [["a", "b", "c"]]


def test_every_app_is_in_a_layer():
    declared = {p for layer in LAYERS for p in layer.packages} | set(contracts.OFFLINE)
    apps = {f"apps.{p.name}" for p in (ROOT / "apps").iterdir() if (p / "__init__.py").exists()}
    assert apps <= declared, apps - declared


def test_docs_architecture_shows_the_declared_layers():
    assert f"```\n{contracts.layers_text()}\n```" in (ROOT / "docs" / "architecture.md").read_text()
