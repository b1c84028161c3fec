"""The engine's rooms (issue 27): no room imports a room above it, and the engine never imports QGIS.

Read from the source with ``ast`` (every ``import`` and ``from … import``, also those inside functions), so an
import added anywhere in a module counts.
"""

import ast
from pathlib import Path

import pytest

from conftest import ROOT

ENGINE = ROOT / "df4lcz_plugin"
#: Bottom → top. A module may import its own room and any room of a lower rank, never a higher one.
RANKS = {"runtime": 0, "lcz": 1, "sentinel2": 1, "models": 2, "vhr": 3, "mapping": 4, "training": 4, "cli": 5,
         "__main__": 6}


def _room(module: str) -> str:
    """The room of a dotted module of the engine: 'df4lcz_plugin.vhr.sam' → 'vhr', 'df4lcz_plugin.cli' → 'cli'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "df4lcz_plugin"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute imported module, line) of every import in the engine module at ``path``."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            # `from . import x`: x is a module of that package
            found += [(f"{target}.{a.name}" if not node.module else target, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.lineno))
    return found


@pytest.mark.timeout(60)
def test_no_room_imports_a_room_above_it():
    modules = sorted(ENGINE.rglob("*.py"))
    rooms = {path.relative_to(ENGINE).parts[0].removesuffix(".py") for path in modules} - {"__init__"}
    assert rooms <= set(RANKS), f"rooms without a rank in this test: {sorted(rooms - set(RANKS))}"
    upward = []
    for path in modules:
        own = path.relative_to(ENGINE).parts[0].removesuffix(".py")
        for target, line in _imports(path):
            if target.startswith("df4lcz_plugin."):
                room = _room(target)
                if room in RANKS and own in RANKS and RANKS[room] > RANKS[own]:
                    upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {target} ({room})")
    assert not upward, "imports from a lower room up to a higher one:\n" + "\n".join(upward)


@pytest.mark.timeout(60)
def test_engine_never_imports_qgis():
    found = [f"{path.relative_to(ROOT)}:{line} imports {target}" for path in sorted(ENGINE.rglob("*.py"))
             for target, line in _imports(path) if target.split(".")[0] in ("qgis", "PyQt5", "PyQt6")]
    assert not found, "\n".join(found)
