"""The package's wiring can be read at the top of each file, and it has no import circles.

- Heavy optional packages (torch, onnxruntime, ncnn, onnx, onnxsim, pnnx, MNN, openvino,
  matplotlib, pycocotools) are imported at the top of the modules that use them. Imports
  inside functions are allowed only at the agreed seams: ``api.py`` (the Python API) and the
  CLI command modules. Backends and optional export formats are loaded by name only in the two
  registries (``runtimes/registry.py``, ``exporters/registry.py``).
- The module-level import graph of ``nanodet_deploy`` has no cycle.
- Package ``__init__.py`` files hold no logic: a docstring, imports and ``__all__``/version.
Each check has a negative control that shows it catches what it guards against.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nanodet_deploy"
HEAVY = frozenset(
    {"torch", "onnxruntime", "ncnn", "onnx", "onnxsim", "pnnx", "MNN", "openvino", "matplotlib",
     "pycocotools"}
)  # fmt: skip
SEAMS = ("api.py", "cli/")
REGISTRIES = ("runtimes/registry.py", "exporters/registry.py")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


def function_level_heavy_imports(source: str, rel: str) -> list[str]:
    """``rel:line: import X`` for each heavy import inside a function of a non-seam module."""
    if rel.startswith(SEAMS) or rel in SEAMS:
        return []
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{rel}:{node.lineno}: import {n}" for n in names if n.split(".")[0] in HEAVY]
    return found


def dynamic_imports(source: str, rel: str) -> list[str]:
    """``importlib.import_module`` / ``__import__`` calls outside the registries."""
    if rel in REGISTRIES:
        return []
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append(f"{rel}:{node.lineno}: {name}(...)")
    return found


def module_imports(source: str, module: str, known: set[str]) -> set[str]:
    """Modules of the package imported at module level (not in functions, not TYPE_CHECKING)."""
    targets: set[str] = set()
    package = module if module in known and (PACKAGE.parent / module.replace(".", "/")).is_dir() \
        else module.rsplit(".", 1)[0]  # fmt: skip

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))  # fmt: skip
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(ast.parse(source).body)
    return {t for t in targets if t in known and t != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> imported modules), or None."""
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def _sources() -> dict[str, tuple[str, str]]:
    """module -> (path relative to the package, source)."""
    return {
        m: (str(p.relative_to(PACKAGE)), p.read_text(encoding="utf-8"))
        for m, p in modules().items()
    }


def test_heavy_packages_are_imported_at_the_top_or_at_a_seam():
    problems = []
    for rel, source in _sources().values():
        problems += function_level_heavy_imports(source, rel)
        problems += dynamic_imports(source, rel)
    assert not problems, "imports outside the agreed seams:\n" + "\n".join(problems)


def test_seam_check_catches_a_function_level_import():
    source = "import numpy\n\ndef run():\n    import torch\n    from onnxruntime import InferenceSession\n"
    assert len(function_level_heavy_imports(source, "detector.py")) == 2
    assert function_level_heavy_imports(source, "cli/detect.py") == []  # a seam
    assert function_level_heavy_imports("def f():\n    import numpy\n", "detector.py") == []
    assert dynamic_imports("import importlib\nimportlib.import_module('x')\n", "bench/spec.py")


def test_no_import_cycles():
    sources = _sources()
    known = set(sources)
    graph = {m: module_imports(src, m, known) for m, (_, src) in sources.items()}
    assert graph["nanodet_deploy.detector"]  # the graph is real, not empty
    assert "nanodet_deploy.config" in graph["nanodet_deploy.train_config"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_cycle_check_catches_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None
    known = {"nanodet_deploy.config", "nanodet_deploy.models.zoo"}
    src = "from nanodet_deploy.models.zoo import zoo_config\n"
    assert module_imports(src, "nanodet_deploy.config", known) == {"nanodet_deploy.models.zoo"}
    hidden = "def f():\n    from nanodet_deploy.models.zoo import zoo_config\n"
    assert module_imports(hidden, "nanodet_deploy.config", known) == set()  # function level


def test_package_init_files_hold_no_logic():
    problems = []
    for path in PACKAGE.rglob("__init__.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            allowed = isinstance(node, ast.Import | ast.ImportFrom | ast.Expr | ast.Assign)
            if isinstance(node, ast.Assign):
                allowed = all(
                    getattr(t, "id", "") in ("__all__", "__version__") for t in node.targets
                )
            if not allowed:
                problems.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {type(node).__name__}")
    assert not problems, problems
