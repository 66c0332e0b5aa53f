"""Test-only modules ship with the package but stay off the serving path.

``testkit.phone`` (a fake Twilio) and ``testkit.speech``
(fake speech providers) are for tests, the bench and the ``gateway call``
command. No production module imports them; ``gateway/cli.py`` may, inside
the functions of the command that places a simulated call.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("channels", "providers", "engine", "gateway", "purposes")
TESTING = ("testkit",)
LAZY_ALLOWED = {Path("gateway/cli.py")}


def _is_testing(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in TESTING)


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node, node.module))
            found += [(node, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _top_level(tree: ast.Module) -> set[ast.stmt]:
    """Statements that run on import (``if TYPE_CHECKING:`` blocks do not)."""
    run: set[ast.stmt] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        run |= {n for n in ast.walk(node) if isinstance(n, ast.stmt)}
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            run -= {n for n in ast.walk(node) if isinstance(n, ast.stmt) and n is not node}
    return run


def test_no_production_module_imports_the_testing_modules() -> None:
    offenders: list[str] = []
    for package in PRODUCTION:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            module = ".".join(relative.with_suffix("").parts)
            if _is_testing(module):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(relative))
            on_import = _top_level(tree)
            for node, name in _imports(tree):
                if not _is_testing(name):
                    continue
                if relative in LAZY_ALLOWED and node not in on_import:
                    continue
                offenders.append(f"{relative}:{node.lineno} imports {name}")
    assert not offenders, offenders


def test_the_scan_sees_the_allowed_lazy_imports() -> None:
    """The check above is not vacuous: the CLI's call command does import the fake Twilio."""
    tree = ast.parse((REPO / "gateway" / "cli.py").read_text(encoding="utf-8"))
    on_import = _top_level(tree)
    lazy = [name for node, name in _imports(tree) if _is_testing(name) and node not in on_import]
    assert "testkit.phone.caller.TwilioCaller" in lazy
