"""QGIS 4 (Qt 6) readiness, checked without a QGIS 4: every Qt name the plugin, its tests and scripts use is found
from the source (AST) and resolved in a subprocess under PyQt6 (Debian's python3-pyqt6) and under QGIS 3.22's
PyQt5, where every Qt and QGIS enum member must also be written fully scoped (``QMessageBox.StandardButton.Yes``,
not ``QMessageBox.Yes``); flake8-qgis then runs its Qt 6 migration rules.

Together they stand for QGIS's migration script (``scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py`` in the QGIS
repository), which cannot be committed or downloaded here:
- the script's enum fixer (unscoped → scoped, from an enum table made from PyQt6 and QGIS 4) is the scoping check
  below, for the enums 3.22 has, plus the PyQt6 resolution;
- its import fix (PyQt5 → qgis.PyQt) and ``qgis.PyQt.Qt`` rewrite, by the import check below (and QGS103/104);
- its other fixes and warnings are flake8-qgis's QGS4xx rules, which port them one by one: ``QVariant.X`` field
  types (QGS402), ``qApp`` (QGS401), renamed enums such as ``Qt.MidButton`` (QGS403), ``QFontMetrics.width``
  (QGS404), ``activated[str]`` (QGS405), QRegExp (QGS406), QDesktopWidget (QGS407), compiled resources (QGS408),
  ``addAction`` with many arguments (QGS409), ``QVariant()`` as NULL (QGS410), old QDateTime constructors
  (QGS411/412); and ``exec_`` (QGS107).
Not covered: enums reached through an instance (``self.x.Enum`` is not resolved), QGIS classes under QGIS 4
(no QGIS 4 bindings here: QGIS names are resolved under 3.22 only), and behaviour (nothing here runs under Qt 6).
"""

import ast
import json
import subprocess
import sys

import plugin_files
from conftest import ROOT

#: Every Python file of the plugin, its tests and scripts.
SOURCES = sorted({ROOT / p for p in plugin_files.files() if p.suffix == ".py"}
                 | set((ROOT / "tests").glob("*.py")) | set((ROOT / "scripts").glob("*.py")))
#: Lines that run on QGIS < 3.38 (Qt 5) only; the Qt 6 resolution skips them (flake8-qgis's own exemption).
QT5_ONLY = "noqa: QGS402"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with PyQGIS, PyQt5 and python3-pyqt6


def _catches_import_error(handler):
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _chain(node):
    """['Root', 'attr', …] of a dotted name, or None when it does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id] + parts[::-1] if isinstance(node, ast.Name) else None


def qt_uses(path, root=ROOT):
    """What ``path`` uses of Qt (imported from ``qgis.PyQt``) and QGIS (``qgis.core``, ``qgis.gui``).

    Returns (uses, bad_imports). A use is a dict: ``line``, ``module`` (where the root name is imported from),
    ``chain`` (the imported name, then the attributes), ``group`` (imports in one ``try/except ImportError``
    share one: one of them must resolve), ``guard`` (``[root, attribute, present]`` of an enclosing
    ``if hasattr(root, "attribute")``) and ``qt5_only``. bad_imports: "file:line module" of Qt imported other
    than through qgis.PyQt.<module>.
    """
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    imported, uses, bad = {}, [], []
    where = path.relative_to(root)

    def visit(node, guard, group):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            group = f"{where}:{node.lineno}"
        if isinstance(node, (ast.If, ast.IfExp)) and isinstance(node.test, ast.Call) \
                and isinstance(node.test.func, ast.Name) and node.test.func.id == "hasattr" \
                and isinstance(node.test.args[0], ast.Name) and isinstance(node.test.args[1], ast.Constant):
            test = [node.test.args[0].id, node.test.args[1].value]
            for child, present in ((node.body, True), (node.orelse, False)):
                for item in (child if isinstance(child, list) else [child]):
                    visit(item, test + [present], group)
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            if module.split(".")[0] in ("PyQt5", "PyQt6", "sip") or module == "qgis.PyQt.Qt":
                bad.append(f"{where}:{node.lineno} {module}")
            elif module.startswith("qgis.PyQt") or module in ("qgis.core", "qgis.gui"):
                for alias in node.names:
                    imported[alias.asname or alias.name] = (module, alias.name)
                    uses.append(dict(line=node.lineno, module=module, chain=[alias.name], group=group, guard=guard,
                                     qt5_only=False))
        elif isinstance(node, ast.Import):
            bad.extend(f"{where}:{node.lineno} {a.name}" for a in node.names
                       if a.name.split(".")[0] in ("PyQt5", "PyQt6"))
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in imported:
                module, name = imported[chain[0]]
                uses.append(dict(line=node.lineno, module=module, chain=[name] + chain[1:], group=None, guard=guard,
                                 qt5_only=QT5_ONLY in lines[node.lineno - 1]))
                return  # the outermost attribute holds the whole chain
        for child in ast.iter_child_nodes(node):
            visit(child, guard, group)

    visit(tree, None, None)
    for use in uses:
        use["where"] = f"{where}:{use['line']}"
    return uses, bad


#: Run by SYSTEM_PYTHON: resolves the uses read from stdin under the binding argv[1] ("PyQt5": QGIS 3.22's
#: qgis.PyQt and PyQGIS; "PyQt6": PyQt6 for qgis.PyQt, QGIS names skipped) and prints the problems as JSON.
RESOLVER = r"""
import functools, importlib, json, sys
binding, uses = sys.argv[1], json.load(sys.stdin)

def module(name):
    if binding == "PyQt6":
        return importlib.import_module("PyQt6" + name[len("qgis.PyQt"):])
    return importlib.import_module(name)

def resolve(use, chain):
    if use["module"] == "qgis.PyQt":  # from qgis.PyQt import sip: a submodule
        package = "PyQt6" if binding == "PyQt6" else "qgis.PyQt"
        return functools.reduce(getattr, chain[1:], importlib.import_module(f"{package}.{chain[0]}"))
    return functools.reduce(getattr, chain, module(use["module"]))

problems, groups = [], {}
for use in uses:
    if binding == "PyQt6" and (not use["module"].startswith("qgis.PyQt") or use["qt5_only"]):
        continue
    if use["guard"]:
        root, attribute, present = use["guard"]
        here = use["where"].split(":")[0]
        owner = next((u for u in uses if u["chain"] == [root] and u["where"].split(":")[0] == here), None)
        if owner is None or (binding == "PyQt6" and not owner["module"].startswith("qgis.PyQt")):
            continue
        if hasattr(resolve(owner, [root]), attribute) != present:
            continue  # that branch does not run on this version
    try:
        value = resolve(use, use["chain"])
    except (AttributeError, ImportError) as error:
        if use["group"]:
            groups.setdefault(use["group"], []).append((use, str(error)))
        else:
            problems.append(f"{use['where']} {'.'.join(use['chain'])}: {error}")
        continue
    if use["group"]:
        groups.setdefault(use["group"], []).append((use, None))
    kind = type(value)
    if binding == "PyQt5" and type(kind).__name__ == "enumtype" and len(use["chain"]) > 1:
        parent = resolve(use, use["chain"][:-1])
        if parent is not kind:
            problems.append(f"{use['where']} {'.'.join(use['chain'])}: unscoped enum member; write "
                            f"{'.'.join(use['chain'][:-1])}.{kind.__name__.split('.')[-1]}.{use['chain'][-1]}")
for group, results in groups.items():
    for name in {tuple(u["chain"]) for u, _ in results}:
        tries = [(u, e) for u, e in results if tuple(u["chain"]) == name]
        if all(e for _, e in tries):
            problems.append(f"{group} {'.'.join(name)}: no alternative resolves ({'; '.join(e for _, e in tries)})")
print(json.dumps(problems))
"""


def resolve(uses, binding):
    """The problems (list of str) of ``uses`` under ``binding`` ("PyQt5" or "PyQt6"), in a subprocess."""
    run = subprocess.run([SYSTEM_PYTHON, "-c", RESOLVER, binding], input=json.dumps(uses), capture_output=True,
                         text=True, timeout=120, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def all_uses():
    uses, bad = [], []
    for path in SOURCES:
        found, wrong = qt_uses(path)
        uses += found
        bad += wrong
    return uses, bad


def test_qt_is_imported_only_through_qgis_pyqt():
    uses, bad = all_uses()
    assert bad == []
    modules = {u["module"] for u in uses}
    assert {"qgis.PyQt.QtCore", "qgis.PyQt.QtGui", "qgis.PyQt.QtWidgets", "qgis.core"} <= modules


def test_every_qt_name_resolves_under_pyqt6():
    uses, _ = all_uses()
    qt = [u for u in uses if u["module"].startswith("qgis.PyQt")]
    assert len(qt) > 60 and any(u["chain"] == ["QMessageBox", "StandardButton", "Yes"] for u in qt)
    assert resolve(uses, "PyQt6") == []


def test_every_qt_and_qgis_name_resolves_fully_scoped_on_qgis_322():
    uses, _ = all_uses()
    assert resolve(uses, "PyQt5") == []


def test_the_checks_find_what_qt6_breaks(tmp_path):
    """FIXTURE: a module written the Qt 5 way; each line must be reported."""
    module = tmp_path / "old_style.py"
    module.write_text(
        "from qgis.core import Qgis, QgsProcessingParameterNumber\n"
        "from qgis.PyQt.QtCore import QProcess\n"
        "from qgis.PyQt.QtWidgets import QAction, QMessageBox\n"
        "from PyQt5.QtCore import QTimer\n"
        "answer = QMessageBox.Yes\n"
        "state = QProcess.NotRunning\n"
        "kind = QgsProcessingParameterNumber.Integer\n"
        "level = Qgis.Warning\n")
    uses, bad = qt_uses(module, tmp_path)
    assert bad == ["old_style.py:4 PyQt5.QtCore"]
    qt6 = resolve(uses, "PyQt6")
    assert [p.split(" ")[1].split(":")[0] for p in qt6] == ["QAction", "QMessageBox.Yes", "QProcess.NotRunning"]
    qgis322 = resolve(uses, "PyQt5")
    assert [p.split(" ")[1].split(":")[0] for p in qgis322] == [
        "QMessageBox.Yes", "QProcess.NotRunning", "QgsProcessingParameterNumber.Integer", "Qgis.Warning"]
    assert "write QgsProcessingParameterNumber.Type.Integer" in qgis322[2]


def test_flake8_qgis_finds_nothing_to_migrate():
    """flake8-qgis's import (QGS1xx) and Qt 6 (QGS4xx) rules. QGS105 (iface passed as an argument) is left out:
    QGIS itself passes iface to the plugin's classFactory, which is where the plugin receives it."""
    run = subprocess.run([sys.executable, "-m", "flake8", "--select", "QGS1,QGS4", "--extend-ignore", "QGS105",
                          *map(str, SOURCES)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "No module named flake8" not in run.stderr, "flake8-qgis is missing: run 'make setup' (requirements/dev.txt)"
    assert (run.returncode, run.stdout) == (0, ""), run.stdout + run.stderr
