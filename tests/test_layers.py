"""The package's layering, read from the source: no import cycle, and nothing that serves a trained model
depends on the training layer.

Layers, bottom up: foundation (errors, distributed, preference, optim, configs) -> data -> models, losses ->
workdir (checkpoints, the Run record, load) -> training | inference (siblings) -> analysis -> cli, api.
Every ``import`` statement counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "hyperlt"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
TRAINING = f"{PACKAGE}.training"

# The one allowed import of the training layer from above it: ``hyperlt train`` trains. cli imports
# ``hyperlt.training.loop.train`` inside ``_run_train`` only, so every other command (and ``import
# hyperlt.cli``) stays free of the training layer.
ALLOWED = {(f"{PACKAGE}.cli", "_run_train", f"{TRAINING}.loop")}

# Modules that must not reach the training layer, directly or through others.
SERVING = (f"{PACKAGE}.inference", f"{PACKAGE}.analysis", f"{PACKAGE}.api", f"{PACKAGE}.cli", f"{PACKAGE}.workdir")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
  return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, str]]:
  """(enclosing function or "", imported module) for every import of a hyperlt module in ``name``."""
  tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
  found = []

  def visit(node: ast.AST, function: str) -> None:
    for child in ast.iter_child_nodes(node):
      inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not function else function
      if isinstance(child, ast.Import):
        found.extend((function, alias.name) for alias in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:   # relative: resolved against this module's package
          package = name if _is_package(name) else name.rpartition(".")[0]
          base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1] + ([base] if base else []))
        # ``from a.b import c`` imports the module a.b.c when there is one, else a name defined in a.b.
        found.extend((function, f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
                     for alias in child.names)
      visit(child, inner)

  visit(tree, "")
  return [(function, target) for function, target in found if target.split(".")[0] == PACKAGE]


def _dependencies(name: str, skip_allowed: bool = True) -> set[str]:
  """The hyperlt modules ``name`` imports, with the packages whose ``__init__`` runs on the way (except
  the packages ``name`` itself belongs to, which are being initialised already)."""
  out = set()
  own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
  for function, target in _imports(name):
    if skip_allowed and (name, function, target) in ALLOWED:
      continue
    while target not in MODULES:          # a name defined in a module's namespace: that module
      target = target.rpartition(".")[0]
    parts = target.split(".")
    out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own_packages - {name}
  return out


GRAPH = {name: _dependencies(name) for name in MODULES}


def _reachable(start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in GRAPH[todo.pop()]:
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_the_source_is_read():
  assert {f"{PACKAGE}.cli", f"{PACKAGE}.api", f"{TRAINING}.loop", f"{PACKAGE}.inference.predictor",
          f"{PACKAGE}.workdir.run"} <= set(MODULES)
  # The whitelisted import exists (so the allowance is not stale) and is the cli's only training import.
  training_imports = [(f, t) for f, t in _imports(f"{PACKAGE}.cli") if t.startswith(TRAINING)]
  assert training_imports == [("_run_train", f"{TRAINING}.loop")]


def test_no_import_cycle():
  cycles = sorted(name for name in MODULES if name in _reachable(name) and not _is_package(name))
  assert not cycles, f"modules that import themselves through others: {cycles}"


@pytest.mark.parametrize("layer", SERVING)
def test_serving_layers_never_reach_training(layer):
  offenders = {}
  for name in MODULES:
    if name == layer or name.startswith(layer + "."):
      reached = sorted(m for m in _reachable(name) if m == TRAINING or m.startswith(TRAINING + "."))
      if reached:
        offenders[name] = reached
  assert not offenders, f"imports of the training layer (directly or through other modules): {offenders}"


def test_training_and_inference_are_siblings():
  inference = f"{PACKAGE}.inference"
  for name in MODULES:
    if name.startswith(TRAINING):
      assert not any(m.startswith(inference) for m in _reachable(name)), f"{name} reaches {inference}"
