"""The shape of the code: imports point one way (no circle) and no module reaches into
another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src" / "winback"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from winback... import name`` and ``import winback...``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("winback"):
            found += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("winback")]
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def owner(name: str) -> str | None:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in mods else None

    graph = {}
    for name, path in mods.items():
        targets = set()
        for module, imported in _imports(path):
            # "from winback.orders import load_orders" names a module or a name in one
            target = owner(f"{module}.{imported}") if imported else owner(module)
            if target not in (None, name, "winback"):
                targets.add(target)
        graph[name] = targets
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := walk(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node, [])):
            return found
    return None


def test_imports_point_one_way():
    graph = _graph()
    assert _circle(graph) is None
    # the floors the design names, from the top down: nothing imports a floor above it
    floors = [
        {"winback.cli"},
        {"winback.demo"},
        {"winback.jobs"},
        {"winback.scoring", "winback.backtest", "winback.measure", "winback.export"},
        {"winback.snapshots", "winback.model", "winback.explain", "winback.drift"},
        {"winback.features", "winback.labels", "winback.btyd"},
        {"winback.orders", "winback.cutoffs"},
        {
            "winback.engines",
            "winback.engines.duckdb",
            "winback.engines.spark",
            "winback.engines.dialect",
        },  # fmt: skip
    ]
    for i, floor in enumerate(floors):
        above = set().union(*floors[:i])
        for module in floor:
            assert module in graph, module
            assert not graph[module] & above, (module, graph[module] & above)


def test_no_module_uses_another_modules_private_names():
    used = [
        (path.relative_to(SRC).as_posix(), module, name)
        for path in SRC.rglob("*.py")
        for module, name in _imports(path)
        if name.startswith("_") and name != "__version__"
    ]
    assert used == []


def test_the_circle_check_sees_a_circle(tmp_path, monkeypatch):
    # the check can fail: a module importing one that imports it back is found
    pkg = tmp_path / "src" / "winback"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from winback.b import y\nx = 1\n")
    (pkg / "b.py").write_text("from winback.a import x\ny = 2\n")
    (pkg / "c.py").write_text("from winback.a import x\n")
    monkeypatch.setitem(globals(), "SRC", pkg)
    graph = _graph()
    assert graph == {"winback": set(), "winback.a": {"winback.b"}, "winback.b": {"winback.a"},
                     "winback.c": {"winback.a"}}  # fmt: skip
    assert _circle(graph) == ["winback.a", "winback.b", "winback.a"]
    assert _circle({"winback.c": {"winback.a"}, "winback.a": set()}) is None
