"""Every script `make bench`, `make chaos` and `make chaos-saturation` run starts as `python bench/<name>.py`: Python then
puts bench/ first on sys.path, not the checkout. A project import placed above a script's own sys.path line (an import
sorter moves them there) breaks that script, and only when it runs, which `make test` does not do. Each is loaded
here as it would be run, without running its main."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())

LOADER = """
import runpy, sys
sys.path[:] = [sys.argv[1]] + [p for p in sys.path[1:] if p not in ("", ".")]
runpy.run_path(sys.argv[2], run_name="loaded_by_test")
"""


def test_the_scripts_are_found():
    assert {p.name for p in SCRIPTS} >= {"bench_cache.py", "bench_budgets.py", "bench_gateway.py", "chaos.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_bench_script_imports_when_run_as_a_script(script: Path, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(BENCH), str(script)],
        cwd=tmp_path,  # not the checkout: only the script's own sys.path line may find the project
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
