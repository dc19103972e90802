"""Library manners, read from the code: every public function and method of the core, the
attacks and the generators says what each argument is and what it returns.

A docstring passes when it exists, has an `Args:` section naming every parameter (self and cls
aside) where there are any, and a `Returns:` (or `Yields:`) section where the annotation is not
None. What the sections say (shapes, ranges, units) is for review; that they exist and name
every argument is checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = ("audit/core", "attacks", "generators")


def public_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    found: list[ast.FunctionDef | ast.AsyncFunctionDef] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not node.name.startswith("_"):
                    found.append(node)
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                walk(node.body)

    walk(tree.body)
    return found


def problems(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    doc = ast.get_docstring(node)
    if doc is None:
        return ["no docstring"]
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    names = [n for n in names if n not in ("self", "cls")]
    missing = []
    if names:
        if "Args:" not in doc:
            missing.append("no Args: section")
        else:
            section = doc.split("Args:", 1)[1]
            missing += [f"Args: misses {n}" for n in names if f"{n}:" not in section]
    returns = node.returns
    returns_none = returns is None or (isinstance(returns, ast.Constant) and returns.value is None)
    if not returns_none and "Returns:" not in doc and "Yields:" not in doc:
        missing.append("no Returns: section")
    return missing


def all_problems() -> list[str]:
    out = []
    for folder in DOCUMENTED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in public_functions(tree):
                for problem in problems(node):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {problem}")
    return out


def test_every_public_function_documents_its_arguments_and_result() -> None:
    found = all_problems()
    assert not found, f"{len(found)} gaps:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(x: int) -> int:\n    return x\n", ["no docstring"]),
        (
            'def f(x: int, *, y: int) -> int:\n    """Doc.\n\n    Args:\n        x: a.\n    """\n',
            ["Args: misses y", "no Returns: section"],
        ),
        (
            'def f(x: int) -> None:\n    """Doc.\n\n    Args:\n        x: a count.\n    """\n',
            [],
        ),
    ],
)
def test_the_rule_catches_what_it_should(source: str, expected: list[str]) -> None:
    (node,) = public_functions(ast.parse(source))
    assert problems(node) == expected
