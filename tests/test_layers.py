"""The house's floors, read from the code's own imports: every arrow runs down, and no module
imports itself back through others.

    interface  audit/{cli,api,arguments,docs,__init__,__main__}.py
    engine     audit/engine/, audit/tasks/, attacks/tasks/   (the graph and what it runs)
    plugins    generators/ | attacks/ (the maths) | reports/  (siblings: none imports another)
    core       audit/core/                                    (imports nothing else of ours)

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy import is
still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("audit", "attacks", "generators", "reports")

# floor -> the floors its modules may import
ALLOWED = {
    "core": {"core"},
    "generators": {"core", "generators"},
    "attacks": {"core", "attacks"},
    "reports": {"core", "reports"},
    "engine": {"core", "generators", "attacks", "reports", "engine"},
    "interface": {"core", "generators", "attacks", "reports", "engine", "interface"},
}


def floor(module: str) -> str:
    for prefix, name in (
        ("audit.core", "core"),
        ("audit.engine", "engine"),
        ("audit.tasks", "engine"),
        ("attacks.tasks", "engine"),
        ("generators", "generators"),
        ("attacks", "attacks"),
        ("reports", "reports"),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "interface"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imports(module: str, path: Path, known: set[str], *, typing_only: bool = True) -> set[str]:
    """The project modules `module` imports (a package's name where only the package is named);
    typing_only=False leaves out the imports under `if TYPE_CHECKING:`, which never run."""
    found = set()
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: None if is_package else -1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            # `from pkg import mod` imports pkg.mod where it is a module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] in PACKAGES}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports(name, path, known) for name, path in modules.items()}


@pytest.fixture(scope="module")
def runtime_graph() -> dict[str, set[str]]:
    """The imports that run: a type-only import cannot make a cycle."""
    modules = project_modules()
    known = set(modules)
    return {name: imports(name, path, known, typing_only=False) for name, path in modules.items()}


def test_every_arrow_runs_down(graph: dict[str, set[str]]) -> None:
    wrong = [
        f"{source} ({floor(source)}) imports {target} ({floor(target)})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if floor(target) not in ALLOWED[floor(source)]
    ]
    assert not wrong, "arrows that run back up or sideways:\n" + "\n".join(wrong)


def test_no_module_imports_itself_back(runtime_graph: dict[str, set[str]]) -> None:
    """No cycle of imports between modules (a package's __init__ re-exporting is not a cycle of
    the code, nor is an import for type annotations only: those edges are left out)."""
    graph = runtime_graph
    edges = {
        source: {t for t in targets if t in graph and not _is_package(t)}
        for source, targets in graph.items()
        if not _is_package(source)
    }
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)) is not None:
            pytest.fail("import cycle: " + " -> ".join(cycle))


def _is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").is_file()


def test_the_rule_itself_catches_an_upward_arrow(tmp_path: Path) -> None:
    """The reader sees a lazy import inside a function: a core module importing the engine there
    is an arrow up."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from audit.engine.driver import execute\n    return execute\n")
    found = imports("audit.core.probe", source, {"audit.engine.driver"})
    assert found == {"audit.engine.driver"}
    assert floor("audit.engine.driver") not in ALLOWED[floor("audit.core.probe")]


def test_the_interface_loads_lazily() -> None:
    """A plugin's `from audit.core.errors import AuditError` must not run the API: importing the
    top package imports no engine module."""
    import subprocess
    import sys

    probe = (
        "import sys, audit.core.errors; "
        "print(sorted(m for m in sys.modules if m.startswith(('audit.engine', 'audit.api'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
