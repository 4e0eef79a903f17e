"""The layer contract: which runtime package may import which, checked on the source with `ast`.

`LAYERS` is the one statement of the layering (docs/architecture.md and the README cite it). Layers are listed
bottom-up; a module may import its own package and the packages of lower layers only. Packages that share a
layer are siblings and never import each other. Runtime modules never import the offline packages
(`OFFLINE`: evaluation, demo, benchmarks). Every import counts: module-level, inside functions and under
`if TYPE_CHECKING:`, plus `importlib.import_module("literal")`. Tests, migrations and `conftest.py` are not
runtime and are not checked.

    python -m finops.contracts          # list the violations and the import cycles between packages

`finops/tests/test_layers.py` runs it in `make test`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    name: str
    packages: tuple[str, ...]


# Bottom-up. A package is a dotted module prefix; the longest declared prefix of a module names its package,
# so the project's wiring modules (finops.urls, finops.asgi, ...) sit on top while the rest of `finops` is core.
LAYERS: tuple[Layer, ...] = (
    Layer("core", ("finops",)),  # errors, async DB/Redis runtime, clock, typed settings, limiter, shared types
    Layer("tenancy", ("apps.tenancy",)),  # orgs, teams, members, API keys, access control and the finance role
    Layer("ledger", ("apps.ledger",)),  # llm_requests, prices (PriceBook), the cost function, recorder, outbox
    # Prompt vectors, local or remote (a remote call is billed on its own ledger row): shared by cache and routing.
    Layer("embeddings", ("apps.embeddings",)),
    # Alert routes and deliveries. Issue #15 drew alerts as a sibling of budgets, cache and routing, but budgets
    # send their threshold alerts through it (as anomalies do), so it sits one layer below them.
    Layer("alerts", ("apps.alerts",)),
    Layer("features", ("apps.budgets", "apps.cache", "apps.routing")),  # siblings: never import each other
    Layer("anomalies", ("apps.anomalies",)),
    Layer("reports", ("apps.reports",)),
    Layer("gateway", ("apps.gateway",)),  # the only place that composes a request
    Layer(
        "project",  # wiring: settings, URLs, the ASGI/WSGI entry points, the `make run` runner
        ("finops.asgi", "finops.runner", "finops.settings", "finops.test_settings", "finops.urls", "finops.wsgi"),
    ),
)

# Offline work: runtime modules never import these, and their own imports are not checked.
OFFLINE: tuple[str, ...] = ("evals", "demo", "bench")

# Where runtime modules live, relative to the source root.
RUNTIME_ROOTS: tuple[str, ...] = ("apps", "finops")


@dataclass(frozen=True)
class ImportSite:
    module: str  # the importing module
    path: Path
    line: int
    target: str  # what it imports, as a dotted name (for `from a.b import c`: a.b.c)
    in_function: bool


@dataclass(frozen=True)
class Violation:
    kind: str  # "upward", "sibling", "offline", "unlayered"
    site: ImportSite
    source_package: str | None
    target_package: str | None

    def __str__(self) -> str:
        where = f"{self.site.path}:{self.site.line}"
        scope = " (inside a function)" if self.site.in_function else ""
        return f"{self.kind}: {self.site.module} imports {self.site.target}{scope} [{where}]"


def _is_excluded(relative: Path) -> bool:
    parts = relative.parts
    return (
        "tests" in parts
        or "migrations" in parts
        or relative.name == "conftest.py"
        or relative.name.startswith("test_")
        or any(part.startswith(".") or part == "__pycache__" for part in parts)
    )


def runtime_modules(root: Path, roots: Sequence[str] = RUNTIME_ROOTS) -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every runtime module under `root`: tests and migrations excluded."""
    root = Path(root)
    for top in roots:
        for path in sorted((root / top).rglob("*.py")):
            relative = path.relative_to(root)
            if _is_excluded(relative):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _resolve_relative(module: str, path: Path, level: int, name: str | None) -> str:
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, name] if name else base)


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, path: Path) -> None:
        self.module, self.path = module, path
        self.depth = 0
        self.sites: list[ImportSite] = []

    def _add(self, node: ast.AST, target: str) -> None:
        self.sites.append(ImportSite(self.module, self.path, getattr(node, "lineno", 0), target, self.depth > 0))

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve_relative(self.module, self.path, node.level, node.module) if node.level else node.module or ""
        for alias in node.names:
            self._add(node, base if alias.name == "*" else f"{base}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._add(node, first.value)
        self.generic_visit(node)


def imports_of(path: Path, module: str) -> list[ImportSite]:
    """Every import of one module, module-level and inside functions."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    visitor = _ImportVisitor(module, Path(path))
    visitor.visit(tree)
    return visitor.sites


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def package_of(module: str, layers: Sequence[Layer] = LAYERS) -> str | None:
    """The declared package a module belongs to: the longest matching prefix."""
    candidates = [p for layer in layers for p in layer.packages if _matches(module, p)]
    return max(candidates, key=len) if candidates else None


def layer_index(package: str, layers: Sequence[Layer] = LAYERS) -> int:
    return next(i for i, layer in enumerate(layers) if package in layer.packages)


def _is_project_module(target: str, layers: Sequence[Layer], offline: Sequence[str]) -> bool:
    tops = {p.split(".")[0] for layer in layers for p in layer.packages} | {o.split(".")[0] for o in offline}
    return target.split(".")[0] in tops


def _sites(root: Path, layers: Sequence[Layer], offline: Sequence[str], roots: Sequence[str]) -> Iterator[ImportSite]:
    for module, path in runtime_modules(root, roots):
        if any(_matches(module, o) for o in offline):
            continue
        for site in imports_of(path, module):
            yield replace(site, path=path.relative_to(root))


def check(
    root: Path, *, layers: Sequence[Layer] = LAYERS, offline: Sequence[str] = OFFLINE, roots: Sequence[str] = RUNTIME_ROOTS
) -> list[Violation]:
    """Every import under `root` that breaks the contract."""
    violations = []
    for site in _sites(Path(root), layers, offline, roots):
        target = site.target
        if not _is_project_module(target, layers, offline):
            continue  # the standard library or a third-party package
        source_package = package_of(site.module, layers)
        if any(_matches(target, o) for o in offline):
            violations.append(Violation("offline", site, source_package, None))
            continue
        target_package = package_of(target, layers)
        if source_package is None:
            violations.append(Violation("unlayered", site, None, target_package))
            continue
        if target_package is None:
            if target != "apps":
                violations.append(Violation("unlayered", site, source_package, None))
            continue
        if target_package == source_package:
            continue
        source_layer, target_layer = layer_index(source_package, layers), layer_index(target_package, layers)
        if target_layer > source_layer:
            violations.append(Violation("upward", site, source_package, target_package))
        elif target_layer == source_layer:
            violations.append(Violation("sibling", site, source_package, target_package))
    return violations


def package_graph(
    root: Path, *, layers: Sequence[Layer] = LAYERS, offline: Sequence[str] = OFFLINE, roots: Sequence[str] = RUNTIME_ROOTS
) -> dict[str, dict[str, list[ImportSite]]]:
    """package -> imported package -> the import sites, over every runtime import (inside functions too)."""
    graph: dict[str, dict[str, list[ImportSite]]] = {}
    for site in _sites(Path(root), layers, offline, roots):
        source, target = package_of(site.module, layers), package_of(site.target, layers)
        if source and target and source != target:
            graph.setdefault(source, {}).setdefault(target, []).append(site)
    return graph


def cycles(graph: dict[str, dict[str, list[ImportSite]]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            visit(node)
    return sorted(found, key=lambda c: (-len(c), c))


def package_cycles(root: Path, *, layers: Sequence[Layer] = LAYERS, offline: Sequence[str] = OFFLINE) -> list[list[str]]:
    return cycles(package_graph(root, layers=layers, offline=offline))


def cycle_report(root: Path, *, layers: Sequence[Layer] = LAYERS, offline: Sequence[str] = OFFLINE) -> list[str]:
    """One line per import cycle, with the edges inside it and the first import site of each."""
    graph = package_graph(root, layers=layers, offline=offline)
    lines = []
    for component in cycles(graph):
        lines.append("cycle: " + " ⇄ ".join(component))
        for source in component:
            for target, sites in sorted(graph.get(source, {}).items()):
                if target in component:
                    first = sites[0]
                    down = layer_index(target, layers) < layer_index(source, layers)
                    lines.append(
                        f"  {source} -> {target}{'' if down else ' (against the layers)'}: {len(sites)} import(s), "
                        f"e.g. {first.path}:{first.line}"
                    )
    return lines


def layers_text(layers: Iterable[Layer] = LAYERS) -> str:
    """The layers top-down, one line each: what the docs show."""
    return "\n".join(f"{layer.name:<10} {', '.join(layer.packages)}" for layer in reversed(list(layers)))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    violations = check(root)
    out = [str(v) for v in violations] + cycle_report(root)
    sys.stdout.write("\n".join(out) + ("\n" if out else ""))
    sys.stdout.write(f"{len(violations)} violation(s), {len(package_cycles(root))} cycle(s)\n")
    return 1 if out else 0


if __name__ == "__main__":
    raise SystemExit(main())
