"""The package graph of dsmar, read from the code's own imports, and the check that it keeps its layers.

    python scripts/import_graph.py            # the graph as a Mermaid diagram (docs/architecture.md holds it)
    python scripts/import_graph.py --check    # exit 1, naming each import that runs up the layers or closes a cycle

Every import counts, also those inside functions: a lazy import still ties the two modules together.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. A package may import its own modules and packages on lower floors only;
# packages on one floor do not import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("kernel",),
    ("catalogs",),
    ("pipeline",),
    ("datagen",),
    ("models",),
    ("flows", "benchmarks"),
    ("dsmar",),
)
FLOOR_OF = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in FLOOR_OF:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, anywhere in the file (a `from a import b` names `a.b` when b is a module)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def module_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def package_of(module: str) -> str:
    return module.split(".")[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = package_of(source), package_of(target)
            if a != b and FLOOR_OF[b] >= FLOOR_OF[a]:
                problems.append(f"{source} imports {target}: {b} is not below {a}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for source, targets in graph.items():
        for target in targets:
            a, b = package_of(source), package_of(target)
            if a != b:
                edges[(a, b)] += 1
    return dict(edges)


def mermaid(graph: dict[str, set[str]]) -> str:
    lines = ["flowchart BT"]
    for level, packages in enumerate(FLOORS):
        for package in packages:
            lines.append(f'    {package}["{package}/ (floor {level})"]')
    for (a, b), count in sorted(package_edges(graph).items(), key=lambda e: (FLOOR_OF[e[0][0]], e[0])):
        lines.append(f"    {a} -->|{count}| {b}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on an import up the layers or a cycle")
    args = parser.parse_args(argv)
    graph = module_graph()
    if not args.check:
        print(mermaid(graph))
        return 0
    problems = upward_imports(graph) + [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for problem in problems:
        print(problem)
    modules, edges = len(graph), sum(len(t) for t in graph.values())
    print(f"{modules} modules, {edges} imports: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
