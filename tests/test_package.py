"""The package's layout: imports flow one way (no module imports one that imports it back), and
every error the package defines is an ElmoError, which the `elmo` command prints as one line."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import torch_elmo
from torch_elmo.errors import ElmoError

SRC = Path(torch_elmo.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """torch_elmo module -> the torch_elmo modules it imports (at any depth of its code)."""
    graph = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.startswith("torch_elmo"):
                    for alias in node.names:  # `from . import kernels` imports a module
                        sub = f"{base}.{alias.name}"
                        module = SRC.parent / sub.replace(".", "/")
                        targets.add(sub if module.with_suffix(".py").exists() or module.is_dir() else base)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("torch_elmo")}
        graph[name] = targets - {name}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = module_imports()
    assert "torch_elmo.model" in graph and "torch_elmo.kernels" in graph["torch_elmo.model"]

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    # a package's __init__ re-exports its modules: it may be imported by none of them
    cycles = [(a, b) for a in graph for b in graph[a] if reaches(b, a, set())]
    assert not cycles


def test_every_error_class_is_an_elmo_error():
    errors = []
    for info in pkgutil.walk_packages(torch_elmo.__path__, "torch_elmo."):
        if info.name == "torch_elmo.__main__":  # runs the command when imported
            continue
        module = importlib.import_module(info.name)
        errors += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                   if issubclass(cls, Exception) and cls.__module__.startswith("torch_elmo")
                   and not cls.__name__.startswith("_")]  # private ones steer control flow, never escape
    assert errors and all(issubclass(cls, ElmoError) for cls in errors), errors
