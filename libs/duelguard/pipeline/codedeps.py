"""A stage's code dependencies: the library modules its function imports, read from the source.

dvc.yaml lists them as each stage's code deps, so a change to any module a stage runs reruns that
stage under `dvc repro` (and no other). The import graph is read with `ast` from the package's files
(nothing is imported): every `import` / `from ... import` counts, module-level or inside a function
(the library imports lazily to keep the CLI fast), except those under `if TYPE_CHECKING:`. Importing
`a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too, so they count as well.

The same graph backs the tests that the library has no import cycles, between its packages and
between its modules, and that its module layering stays shallow (docs/architecture.md is drawn from it).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import duelguard

PACKAGE = "duelguard"
# The installed package; dvc.yaml is generated from the source tree under the repository root instead.
PACKAGE_DIR = Path(duelguard.__file__).resolve().parent


# Package data that stage results depend on (duelguard/suite/*.jsonl, its benign context/*.txt).
PACKAGE_DATA_SUFFIXES = (".jsonl", ".txt")


@cache
def modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package in `package_dir`: dotted name -> source file."""
    out: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _with_parents(name: str, package_dir: Path) -> list[str]:
    """`name` and the packages above it that are modules of ours (importing it runs all of them)."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:k]) for k in range(1, len(parts) + 1)) if m in modules(package_dir)]


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, package_dir: Path) -> None:
        self.module, self.is_package, self.package_dir = module, is_package, package_dir
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
        if name == "TYPE_CHECKING":  # typing-only imports never run
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.update(_with_parents(alias.name, self.package_dir))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        self.found.update(_with_parents(base, self.package_dir))
        for alias in node.names:  # `from pkg import module` imports a module, not just a name
            self.found.update(_with_parents(f"{base}.{alias.name}", self.package_dir))


@cache
def imports(module: str, package_dir: Path = PACKAGE_DIR) -> frozenset[str]:
    """The package's modules that `module` imports directly (function-level imports included)."""
    path = modules(package_dir)[module]
    visitor = _Imports(module, path.name == "__init__.py", package_dir)
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return frozenset(visitor.found - {module})


def closure(module: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """`module`, its parent packages and every module of ours they import, transitively; sorted."""
    if module not in modules(package_dir):
        raise KeyError(f"{module}: not a module of the {PACKAGE} package in {package_dir}")
    seen: set[str] = set()
    todo = _with_parents(module, package_dir)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports(name, package_dir))
    return sorted(seen)


def code_files(function: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The source files a stage function ("module:attribute") runs: its module's import closure, plus
    the data files shipped inside any package of that closure (the behavioural suite's prompts are
    as much a part of what `evaluate` computes as its code)."""
    files: list[Path] = []
    for name in closure(function.partition(":")[0], package_dir):
        path = modules(package_dir)[name]
        files.append(path)
        if path.name == "__init__.py":
            files += package_data(path.parent)
    return files


def package_data(directory: Path) -> list[Path]:
    """The data files of one package: in its folder and in data folders below it (not subpackages)."""
    found = [p for p in sorted(directory.iterdir()) if p.is_file() and p.suffix in PACKAGE_DATA_SUFFIXES]
    for sub in sorted(p for p in directory.iterdir() if p.is_dir() and not (p / "__init__.py").exists()):
        found += package_data(sub)
    return found


def package_of(module: str) -> str:
    """The unit cycles are checked between: a top-level module, or a subpackage of the package."""
    return ".".join(module.split(".")[:2])


def package_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Which of the package's subpackages / top-level modules import which others."""
    graph: dict[str, set[str]] = {}
    for name in modules(package_dir):
        unit = package_of(name)
        graph.setdefault(unit, set()).update(package_of(dep) for dep in imports(name, package_dir))
    for unit, deps in graph.items():
        deps.discard(unit)
        deps.discard(PACKAGE)  # the package's own __init__ imports nothing of ours
    return graph


def module_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Which of the package's modules import which others: every import statement anywhere in a file,
    function-level ones included (a lazy import is a dependency all the same; it only runs later).
    The root package is left out: its __init__ imports nothing, and every module would "import" it."""
    return {name: set(imports(name, package_dir)) - {PACKAGE} for name in modules(package_dir) if name != PACKAGE}


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each node's level in an acyclic graph: 1 for a node that imports nothing of ours, else one more
    than the highest level it imports; the largest value is the number of modules on the longest
    import path. ValueError on a cycle (there is no layering to speak of)."""
    found = cycles(graph)
    if found:
        raise ValueError(f"import cycles, so no levels: {found}")
    level: dict[str, int] = {}

    def visit(node: str) -> int:
        if node not in level:
            level[node] = 1 + max((visit(dep) for dep in graph.get(node, ())), default=0)
        return level[node]

    for node in sorted(graph):
        visit(node)
    return level


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
