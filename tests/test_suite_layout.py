"""The test suite's own rules, read from its source: shared helpers live in ``tests/helpers.py`` or
``conftest.py`` (no test module imports another), and code run in a subprocess is a real file under
``tests/scripts/`` (no Python source in strings handed to ``exec``, ``eval`` or ``python -c``)."""

from __future__ import annotations

import ast
import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
SOURCES = sorted(TESTS.rglob("*.py"))


def _imported_modules(tree: ast.AST) -> list[str]:
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.extend(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      names.extend(f"{node.module or ''}.{alias.name}".strip(".") for alias in node.names)
  return names


def test_the_suite_is_read():
  assert TESTS / "helpers.py" in SOURCES and TESTS / "test_train.py" in SOURCES
  assert any(p.parent.name == "scripts" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_module_imports_another(path):
  tree = ast.parse(path.read_text(), filename=str(path))
  offending = [name for name in _imported_modules(tree)
               if any(part.startswith("test_") or part == "conftest" for part in name.split("."))]
  assert not offending, f"{path.name} imports test modules {offending}: move shared code to tests/helpers.py"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_source_code_in_strings(path):
  tree = ast.parse(path.read_text(), filename=str(path))
  calls = [node.func.id for node in ast.walk(tree)
           if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval")]
  dash_c = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.List, ast.Tuple))
            and any(isinstance(e, ast.Constant) and e.value == "-c" for e in node.elts)]
  assert not calls and not dash_c, f"{path.name}: exec/eval {calls}, python -c at lines {dash_c}"
