"""The package's layering, enforced: dependencies point down the data flow, never up.

From the bottom: the foundation (errors, settings, the boto3 client factory), the I/O
adapters (object storage, message queues), then the data flow (audio → artifacts →
inference → outputs), the set-up builders and the deferred-request records above what they
use, and the faces on top (the HTTP service and the batch worker, which know nothing of
each other, then the command line, which registers both). Packages on one layer never
import each other. Every import counts, function-level and ``TYPE_CHECKING`` ones
included: an import hidden in a function body is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sevensense"
ROOT = Path(__file__).resolve().parents[1] / "service" / PACKAGE

# Bottom first. A unit is a top-level module or subpackage of ``sevensense``.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__"}),
    frozenset({"errors"}),
    frozenset({"identity", "profiles"}),
    frozenset({"settings"}),
    frozenset({"aws"}),
    frozenset({"storage", "queues"}),
    frozenset({"audio"}),
    frozenset({"artifacts"}),
    frozenset({"inference"}),
    frozenset({"embeddings", "verification"}),
    frozenset({"outputs", "index"}),
    frozenset({"agile"}),
    frozenset({"planning"}),
    frozenset({"archive", "builders", "jobs", "quality_gate"}),
    frozenset({"serving", "worker"}),
    frozenset({"client"}),
    frozenset({"cli"}),
)

# Inside the HTTP service, rooms by role, bottom first: the same rule one level down. The
# faces ``http`` and ``stream`` share a layer, so neither may import the other; only
# ``service`` (the BentoML wiring) sees both.
SERVING_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__"}),
    frozenset({"telemetry", "lifecycle"}),
    frozenset({"model_service"}),
    frozenset({"schemas"}),
    frozenset({"access"}),
    frozenset({"model_paths"}),
    frozenset({"rollout"}),
    frozenset({"dispatch", "tenant_index"}),
    frozenset({"http", "stream"}),
    frozenset({"service"}),
)

# Libraries that belong to one face only; the layers below them stay framework-free.
FRAMEWORKS: dict[str, frozenset[str]] = {
    "bentoml": frozenset({"sevensense.serving.service"}),
    "fastapi": frozenset({"serving"}),
    "starlette": frozenset({"serving"}),
    "uvicorn": frozenset({"serving"}),
    "click": frozenset({"cli"}),
}


@dataclass(frozen=True)
class Import:
    module: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    """Every import statement in the file, at any depth, resolved to absolute names."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # ``from sevensense import audio`` imports a package
                submodule = f"{target}.{alias.name}"
                path = root.parent.joinpath(*submodule.split("."))
                is_module = path.is_dir() or path.with_suffix(".py").is_file()
                yield Import(name, submodule if is_module else target, node.lineno)


def unit_of(module: str, root: Path) -> str | None:
    """The layered unit a ``sevensense`` module belongs to; None for other libraries."""
    parts = module.split(".")
    if parts[0] != root.name:
        return None
    if len(parts) == 1:
        return "__init__"
    first = parts[1]
    if (root / first).is_dir() or (root / f"{first}.py").is_file():
        return first
    return "__init__"  # a name defined in the package's own __init__


def rank_of(unit: str, layers: tuple[frozenset[str], ...] = LAYERS) -> int:
    for rank, layer in enumerate(layers):
        if unit in layer:
            return rank
    raise KeyError(unit)


def all_imports(root: Path) -> list[Import]:
    return [i for path in sorted(root.rglob("*.py")) for i in imports_of(path, root)]


def serving_imports(root: Path) -> list[Import]:
    """Imports between modules of ``serving``, renamed so that ``unit_of`` sees its rooms."""
    serving = root / "serving"
    if not serving.is_dir():
        return []
    prefix = f"{root.name}.serving."
    return [
        Import(
            imp.module.replace(prefix, "serving.", 1),
            imp.target.replace(prefix, "serving.", 1),
            imp.line,
        )
        for imp in all_imports(root)
        if imp.module.startswith(prefix) and imp.target.startswith(prefix)
    ]


def upward_imports(root: Path) -> list[str]:
    problems = []
    checked = [(imp, root, LAYERS) for imp in all_imports(root)]
    checked += [(imp, root / "serving", SERVING_LAYERS) for imp in serving_imports(root)]
    for imp, base, layers in checked:
        source, target = unit_of(imp.module, base), unit_of(imp.target, base)
        if source is None or target is None or source == target:
            continue
        try:
            lower = rank_of(target, layers) < rank_of(source, layers)
        except KeyError as exc:
            problems.append(f"{imp}: {exc.args[0]!r} has no layer in {base.name}'s layers")
            continue
        if not lower:
            problems.append(f"{imp}: {target} is not below {source}")
    return sorted(set(problems))


def package_cycles(root: Path) -> list[list[str]]:
    """Units that reach each other through imports: the strongly connected components of
    the unit graph with more than one member (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports(root):
        source, target = unit_of(imp.module, root), unit_of(imp.target, root)
        if source and target and source != target:
            graph.setdefault(source, set()).add(target)
            graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def framework_leaks(root: Path) -> list[str]:
    problems = []
    for imp in all_imports(root):
        library = imp.target.split(".")[0]
        allowed = FRAMEWORKS.get(library)
        if allowed is None:
            continue
        unit = unit_of(imp.module, root)
        if imp.module not in allowed and unit not in allowed:
            problems.append(f"{imp}: {library} belongs to {sorted(allowed)} only")
    return sorted(set(problems))


# --- the package ----------------------------------------------------------------------------


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(module_name(p, ROOT), ROOT) for p in ROOT.rglob("*.py")}
    placed = set().union(*LAYERS)
    assert units - placed == set(), "add these to LAYERS"
    assert placed - units == set(), "LAYERS names units that no longer exist"


def test_every_serving_room_has_a_layer() -> None:
    serving = ROOT / "serving"
    rooms = {unit_of(module_name(p, serving), serving) for p in serving.rglob("*.py")}
    placed = set().union(*SERVING_LAYERS)
    assert rooms - placed == set(), "add these to SERVING_LAYERS"
    assert placed - rooms == set(), "SERVING_LAYERS names rooms that no longer exist"


def test_no_upward_or_sideways_import() -> None:
    assert upward_imports(ROOT) == []


def test_no_package_cycle() -> None:
    assert package_cycles(ROOT) == []


def test_frameworks_stay_in_their_face() -> None:
    assert framework_leaks(ROOT) == []


# --- the checker itself, on a tree made to break it -----------------------------------------


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    root = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "errors.py": "",
        "audio/__init__.py": "",
        "audio/decode.py": "from sevensense.errors import X\n",
        "inference/__init__.py": "",
        "inference/engine.py": "from sevensense.audio.decode import decode\n",
        # upward, and only inside a function: still a dependency
        "audio/pipeline.py": "def f():\n    from sevensense.inference import engine\n",
        # relative import that climbs into a sibling face
        "serving/__init__.py": "",
        "serving/gateway.py": "from ..worker import base\nimport fastapi\n",
        "worker/__init__.py": "",
        "worker/base.py": "from sevensense.serving.gateway import G\n",
        # the two faces of the HTTP service reaching into each other, and a floor below
        # the faces importing one
        "serving/http/__init__.py": "",
        "serving/http/app.py": "from sevensense.serving.stream.socket import mount\n",
        "serving/stream/__init__.py": "",
        "serving/stream/socket.py": "from ..http import app\n",
        "serving/telemetry/__init__.py": "",
        "serving/telemetry/metrics.py": "",
        "serving/dispatch/__init__.py": "",
        "serving/dispatch/plan.py": "from sevensense.serving.telemetry import metrics\n",
        "index/__init__.py": "",
        "index/store.py": "from sevensense.cli import main\n",
        "cli/__init__.py": "",
        "outputs/__init__.py": "",
        "outputs/writers.py": "import bentoml\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_names_upward_imports(broken_tree: Path) -> None:
    found = upward_imports(broken_tree)
    assert any(
        p.startswith("sevensense.audio.pipeline:2 imports sevensense.inference.engine")
        for p in found
    ), found
    assert any("sevensense.serving.gateway:1 imports sevensense.worker" in p for p in found)
    assert any("sevensense.worker.base:1 imports sevensense.serving.gateway" in p for p in found)
    assert not any(p.startswith("sevensense.inference.engine") for p in found)


def test_checker_names_the_faces_of_serving_importing_each_other(broken_tree: Path) -> None:
    found = upward_imports(broken_tree)
    assert any("serving.http.app:1 imports serving.stream.socket" in p for p in found), found
    assert any("serving.stream.socket:1 imports serving.http.app" in p for p in found), found
    assert any("sevensense.index.store:1 imports sevensense.cli" in p for p in found), found
    assert not any(p.startswith("serving.dispatch.plan") for p in found), found


def test_checker_finds_cycles(broken_tree: Path) -> None:
    cycles = package_cycles(broken_tree)
    as_sets = [set(c) for c in cycles]
    assert {"audio", "inference"} in as_sets
    assert {"serving", "worker"} in as_sets


def test_checker_finds_framework_leaks(broken_tree: Path) -> None:
    leaks = framework_leaks(broken_tree)
    assert any(p.startswith("sevensense.outputs.writers:1 imports bentoml") for p in leaks)
    assert not any(p.startswith("sevensense.serving.gateway") for p in leaks)
