"""The house: every module sits in a layer, imports only from its own layer or lower ones (imports inside
functions included), the modules do not import each other in a circle, and none is over 450 lines.

The order of the layers is written once, in the docstring of src/synthcheck/__init__.py ("Layers (lowest
first): ..."); this test reads it from there. Nothing here imports the package, except the last test, which
checks what `synthcheck --help` loads."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "synthcheck"
MAX_LINES = 450


def _layers() -> list[str]:
    doc = ast.get_docstring(ast.parse((PKG / "__init__.py").read_text()))
    m = re.search(r"^Layers \(lowest first\): (.+)$", doc or "", re.M)
    assert m, "src/synthcheck/__init__.py's docstring must name the layers: 'Layers (lowest first): a, b, ...'"
    return [x.strip() for x in m.group(1).split(",")]


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is named by its __init__.py)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


LAYERS = _layers()
MODULES = _modules()
TOP = len(LAYERS)  # the facade, src/synthcheck/__init__.py, stands above every layer


def _rank(module: str) -> int | None:
    """The layer index of a module: -1 for `_version` (below all), TOP for the package facade, None if unplaced."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    if parts[1] == "_version":
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _imports(module: str, path: Path):
    """(line, module imported) for every import of SynthCheck code in a file, nested ones included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "synthcheck":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "synthcheck":
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else target


def _rel(path: Path) -> str:
    return str(path.relative_to(PKG.parent.parent))


def test_the_layers_are_the_subpackages():
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert packages == set(LAYERS), f"subpackages {sorted(packages)} vs layers {LAYERS}"


def test_every_module_sits_in_a_layer():
    loose = [_rel(p) for m, p in MODULES.items() if _rank(m) is None]
    assert not loose, f"modules outside every layer (move them into one of {', '.join(LAYERS)}): {loose}"


def test_imports_point_only_downward():
    upward = []
    for module, path in MODULES.items():
        for line, target in _imports(module, path):
            if _rank(target) is None or _rank(target) > _rank(module):
                upward.append(f"{_rel(path)}:{line} ({module.split('.')[1] if '.' in module else 'facade'}) imports "
                              f"{target}")
    assert not upward, ("imports of a higher layer (order, lowest first: " + ", ".join(LAYERS) + "):\n"
                        + "\n".join(upward))


def test_no_import_cycles():
    graph = {m: {t for _, t in _imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_over_450_lines():
    long = {_rel(p): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_the_command_loads_without_torch_and_the_api_is_at_the_top():
    code = ("import sys, synthcheck.cli; assert 'torch' not in sys.modules, 'synthcheck --help would import torch'; "
            "from synthcheck import Detector, Prediction, __version__; print(Detector.__name__, Prediction.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Detector", "Prediction"]
