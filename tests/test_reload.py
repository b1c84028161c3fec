"""Reloading the plugin as Plugin Reloader does, twice, in one real QGIS desktop (Xvfb, fresh profile without
dependencies): ``unload()``, the plugin's modules dropped from ``sys.modules``, imported again, ``classFactory(iface)``
and ``initGui()`` (``qgis.utils.reloadPlugin``). Each load leaves one menu action, one ``df4lcz`` provider and one
notice; a click runs one callback (one installer dialog); nothing of an earlier load is left: its plugin object is
collected, its action, notice, provider and dialog are deleted, its modules are gone."""

import pytest

from conftest import run_desktop_probe
from df4lcz_plugin.runtime import dependencies

_RELOAD_PROBE = """
import gc, sys, weakref
from qgis.core import QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QDialog, QPushButton
try:
    from qgis.PyQt.QtGui import QAction  # Qt 6
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt 5
from qgis.utils import iface, loadPlugin, plugins, startPlugin, unloadPlugin

NAME, ENTRY = "df4lcz", "Install dependencies…"

def reload(out):
    # Plugin Reloader: qgis.utils.reloadPlugin (unload(), the tracked modules dropped, import, classFactory,
    # initGui), after dropping every module of the package.
    assert unloadPlugin(NAME)
    for module in [m for m in sys.modules if m == NAME or m.startswith(NAME + ".")]:
        del sys.modules[module]
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # the event loop's deleteLater()s
    out["unloaded"].append(state(None))
    assert loadPlugin(NAME) and startPlugin(NAME)
    gc.collect()
    out["states"].append(state(plugins[NAME]))

def ours(kind, text):
    return [w for w in iface.mainWindow().findChildren(kind) if text(w) == ENTRY and not sip.isdeleted(w)]

def state(plugin):
    # What is shown, each item marked whether it is ``plugin``'s (None: the plugin unloaded).
    menus = [a.menu() for a in iface.pluginMenu().actions() if a.menu() and a.text().replace("&", "") == "DF4LCZ"]
    providers = [p for p in QgsApplication.processingRegistry().providers() if p.id() == NAME]
    return {"menu": [[a.text() for a in m.actions()] for m in menus],
            "actions": [a is getattr(plugin, "install_action", None) for a in ours(QAction, QAction.text)],
            "receivers": plugin and plugin.install_action.receivers(plugin.install_action.triggered),
            "providers": [p is getattr(plugin, "provider", None) for p in providers],
            "notices": [i is getattr(plugin, "notice", None) for i in iface.messageBar().items()
                        if i.text().startswith("its algorithms need")],
            "notice_buttons": len(ours(QPushButton, QPushButton.text)), "dialogs": len(dialogs())}

def dialogs():
    return [d for d in iface.mainWindow().findChildren(QDialog) if d.windowTitle().endswith(ENTRY)
            and not sip.isdeleted(d)]

def click():
    plugin = plugins[NAME]
    plugin.install_action.trigger()
    return [[d is plugin.dialog, d.isVisible()] for d in dialogs()]

def modules():
    return [weakref.ref(m) for k, m in sys.modules.items() if k == NAME or k.startswith(NAME + ".")]

def one_connection():
    # Receivers of the triggered signal of an action with one slot, in a plugin menu (QGIS adds its own).
    action = QAction("Reference", iface.mainWindow())
    action.triggered.connect(lambda: None)
    iface.addPluginToMenu("&Reference", action)
    count = action.receivers(action.triggered)
    iface.removePluginMenu("&Reference", action)
    action.deleteLater()
    return count

def probe(out):
    out["one_connection"] = one_connection()
    plugins_made, qt_made, modules_made = [], [], []  # by each earlier load (plugin and modules weakly)
    out["states"], out["unloaded"] = [state(plugins[NAME])], []
    for load in (1, 2):
        plugin = plugins[NAME]
        qt_made.append([plugin.install_action, plugin.notice, plugin.provider])
        if load == 2:  # the second load's installer dialog is open when it is reloaded
            out["click_before_reload"] = click()
            qt_made[-1].append(plugin.dialog)
        plugins_made.append(weakref.ref(plugin))
        modules_made.append(modules())
        del plugin
        reload(out)
    out["click"] = click()
    out["plugins_alive"] = [ref() is not None for ref in plugins_made]
    out["qt_alive"] = [[not sip.isdeleted(o) for o in made] for made in qt_made]
    del qt_made  # the probe's own wrappers of deleted objects (their classes are the earlier modules')
    gc.collect()
    out["modules_alive"] = [[m().__name__ for m in made if m() is not None] for made in modules_made]
"""


@pytest.mark.timeout(700)
def test_reload_leaves_one_of_everything(tmp_path):
    out = run_desktop_probe(tmp_path, _RELOAD_PROBE)
    assert out["one_connection"] >= 1
    for state in out["states"]:
        assert state["menu"] == [[dependencies.INSTALL_ENTRY]]
        assert state["actions"] == [True] and state["receivers"] == out["one_connection"]
        assert state["providers"] == [True]
        assert state["notices"] == [True] and state["notice_buttons"] == 1
        assert state["dialogs"] == 0
    nothing = {"menu": [], "actions": [], "receivers": None, "providers": [], "notices": [], "notice_buttons": 0,
               "dialogs": 0}
    assert out["unloaded"] == [nothing, nothing]
    assert out["click_before_reload"] == [[True, True]]
    assert out["click"] == [[True, True]]  # one dialog, the third load's: the second's went with its plugin
    assert out["plugins_alive"] == [False, False]
    assert out["qt_alive"] == [[False] * 3, [False] * 4]
    assert out["modules_alive"] == [[], []]
