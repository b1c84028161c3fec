"""The dependency installer as a QGIS user drives it. The real dialog widget (offscreen) runs the real installer
command in a QProcess (real pip, the real package index) into a temporary dependency folder: cancel mid-way,
install again, repair a half-moved package, remove, cancel a removal, unload after a cancel. A killed installer's
pip keeps another installer out; removal refuses what is not a dependency folder. The plugin in a real QGIS desktop
(Xvfb, fresh profile without dependencies) shows its Plugins menu entry and its notice, and unloading removes both.
The engine's package moves and PyTorch build choices are checked on their own."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_desktop_probe
from df4lcz_plugin.runtime import dependencies


@pytest.fixture(scope="module")
def plugin(qgis_app):
    """The working tree's plugin package as QGIS loads it (imported by the qgis_app fixture)."""
    import df4lcz

    return df4lcz


def _wait(dialog, until):
    """Process Qt events (the QProcess's output and end) until ``until()`` is true; the installer stopping first
    (with ``until`` still false) fails the test."""
    from qgis.PyQt.QtTest import QTest

    while not until():
        assert dialog.running() or until(), f"the installer ended early:\n{dialog.log.toPlainText()}"
        QTest.qWait(20)


def _finish(dialog):
    """Wait for the dialog's installer to end: its interpreter found, its process's end handled (QProcess emits
    ``finished`` as soon as its state is NotRunning)."""
    _wait(dialog, lambda: not dialog.running())


def _whole(target):
    """{dist-info name: missing files} for every package in ``target``, and the top-level entries no dist-info's
    RECORD accounts for (what a half-moved package would leave)."""
    missing, owned = {}, {"bin"}  # bin/: pip's scripts, which RECORD lists outside the folder
    for dist_info in target.glob("*.dist-info"):
        paths = [line.rsplit(",", 2)[0] for line in (dist_info / "RECORD").read_text().splitlines()]
        inside = [p for p in paths if not p.startswith("..")]
        missing[dist_info.name] = [p for p in inside if not (target / p).exists()]
        owned |= {Path(p).parts[0] for p in inside}
    return missing, {p.name for p in target.iterdir()} - owned


def test_dialog_install_cancel_resume_remove(plugin, tmp_path):
    """Light into an empty folder: Cancel after the first package leaves only whole packages; Install again does
    the rest only, shows the restart prompt and puts the folder on sys.path. Packages whose files are in but whose
    dist-info is not (their installer killed while moving them in) are missing, and Install repairs them; Remove
    (confirmed) deletes the folder."""
    from df4lcz.algorithms.install_dialog import InstallDialog
    from qgis.PyQt.QtWidgets import QMessageBox

    deps = plugin.df4lcz_plugin.runtime.dependencies
    target = tmp_path / ".deps" / f"py{sys.version_info.major}{sys.version_info.minor}"
    telemetry = deps.Pin("openvino-telemetry", "2025.2.0", None)  # an older set's: withdrawn, install deletes it
    deps.install_package(telemetry, target)
    # What to install: the pins this Python (the venv, with the development tools' click) does not provide itself.
    plan, pins = deps.plan("light"), deps.lacking("light", None, target)
    dialog = InstallDialog(target)
    dialog.show()
    assert dialog.states["light"].text() == "not installed"

    dialog.install_button.click()
    assert dialog.running() and not dialog.install_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert dialog.status.text() == "Looking for the Python interpreter QGIS runs…"
    _wait(dialog, lambda: dialog.progress.value() >= 1)  # the first package is in
    dialog.cancel_button.click()
    _finish(dialog)
    assert dialog.status.text().startswith("Cancelled"), dialog.log.toPlainText()
    assert "Deleted openvino_telemetry-2025.2.0: the plugin no longer uses it." in dialog.log.toPlainText()
    assert not list(target.glob("openvino_telemetry*"))
    missing, strays = _whole(target)
    kept = [pin for pin in pins if deps.installed(target, pin.name, pin.version)]
    assert 1 <= len(kept) < len(pins) and len(missing) == len(kept)
    assert not any(missing.values()) and not strays, (missing, strays)
    assert not deps.staging_folder(target).exists()
    assert dialog.states["light"].text() == f"{len(kept) + len(plan) - len(pins)} of {len(plan)} packages installed"
    assert dialog.restart_prompt is None

    dialog.install_button.click()
    _finish(dialog)
    log = dialog.log.toPlainText()
    rest = len(pins) - len(kept)
    assert f"[0/{rest}] Installing {rest} package(s)" in log and f"[{rest}/{rest}] " in log, log
    assert dialog.progress.maximum() == dialog.progress.value() == rest
    assert all(deps.installed(target, pin.name, pin.version) for pin in pins)
    assert not any(_whole(target)[0].values())
    assert dialog.states["light"].text() == "installed"
    assert dialog.restart_prompt.isVisible() and "Restart QGIS" in dialog.restart_prompt.text()
    assert sys.path[0] == str(target)
    sys.path.remove(str(target))  # the folder goes away with tmp_path
    assert deps.missing("light", target) == []

    for name in ("lightgbm", "msgpack"):
        [dist_info] = target.glob(f"{name}-*.dist-info")
        dist_info.rename(tmp_path / dist_info.name)
    assert (target / "lightgbm" / "__init__.py").is_file() and (target / "msgpack").is_dir()
    assert deps.missing("light", target) == ["LightGBM", "msgpack"]  # user-facing names first
    cli = subprocess.run([sys.executable, "-m", "df4lcz_plugin.runtime.dependencies", "missing", "--variant", "light",
                          "--target", str(target)], cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stdout.split() == ["LightGBM", "msgpack"], cli.stdout + cli.stderr
    before = len(dialog.log.toPlainText())
    dialog.install_button.click()
    _finish(dialog)
    log = dialog.log.toPlainText()[before:]
    assert "[0/2] " in log and "[2/2] " in log and deps.missing("light", target) == [], log
    assert not any(_whole(target)[0].values()) and not _whole(target)[1]
    sys.path.remove(str(target))

    dialog.remove_button.click()
    dialog.remove_prompt.button(QMessageBox.StandardButton.Yes).click()
    _finish(dialog)
    assert not target.exists() and dialog.states["light"].text() == "not installed"
    assert "removed" in dialog.restart_prompt.text()
    dialog.close()


def test_cancel_while_removing(plugin, tmp_path):
    """Cancel while the interpreter is looked for starts nothing; Cancel once the removal runs stops it before it
    deletes anything, and says so (not what an install's Cancel says); if the removal won the race, the status says what is left."""
    from df4lcz.algorithms.install_dialog import InstallDialog
    from qgis.PyQt.QtWidgets import QMessageBox

    target = tmp_path / ".deps" / "py311"
    (target / "pkg").mkdir(parents=True)
    (target / "pkg" / "module.py").write_text("")
    dialog = InstallDialog(target)
    for started in (False, True):
        dialog.remove_button.click()
        dialog.remove_prompt.button(QMessageBox.StandardButton.Yes).click()
        if started:
            _wait(dialog, lambda: dialog.process is not None)
        dialog.cancel_button.click()
        _finish(dialog)
    assert dialog.log.toPlainText().count("Cancelled before the installer started; nothing changed.") == 1
    if (target / "pkg" / "module.py").is_file():  # the usual case: Cancel came before the folder was moved aside
        assert dialog.status.text() == f"Cancelled before anything was deleted: {target} is whole."
        assert dialog.restart_prompt is None
    else:  # on a loaded machine the one-file removal can move the folder aside first: then the status says so
        assert not target.exists() and dialog.status.text().startswith("Cancelled while deleting: the dependencies "
                                                                        "are removed")
        assert str(target.parent / ".trash-py311") in dialog.status.text()
    dialog.close()


@pytest.mark.timeout(120)
def test_unload_after_cancel_leaves_nothing_running(plugin, tmp_path, monkeypatch):
    """Cancel, then the plugin's unload (``stop()``, then the dialog deleted) while the installer ignores SIGTERM (a
    Python that sleeps, here): stop() kills it, and no timer of the deleted dialog fires later (one did, and
    raised on the deleted QProcess)."""
    from df4lcz.algorithms import install_dialog
    from qgis.PyQt.QtCore import QCoreApplication, QEvent, QProcess
    from qgis.PyQt.QtTest import QTest

    monkeypatch.setattr(install_dialog, "KILL_AFTER_MS", 200)
    errors = []
    monkeypatch.setattr(sys, "excepthook", lambda *error: errors.append(error))
    dialog = install_dialog.InstallDialog(tmp_path / ".deps" / "py311")
    dialog._start("install", ["-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                    "print('ready', flush=True); time.sleep(60)"])
    _wait(dialog, lambda: "ready" in dialog.log.toPlainText())
    dialog.cancel()
    dialog.stop()
    assert not dialog.running() and dialog.process.exitStatus() == QProcess.ExitStatus.CrashExit
    dialog.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QTest.qWait(5 * install_dialog.KILL_AFTER_MS)  # past every kill timer the two Cancels started
    assert errors == []


def test_interpreter_lookup_leaves_the_dialog_responsive(plugin, tmp_path, monkeypatch):
    """An interpreter candidate that takes 3 s to answer (QGIS's own place, here) does not freeze the dialog: the
    click returns at once, and the installer then runs with the interpreter of QGIS's version found after it."""
    from df4lcz.algorithms.install_dialog import InstallDialog
    from qgis.PyQt.QtWidgets import QMessageBox

    deps = plugin.df4lcz_plugin.runtime.dependencies
    slow = tmp_path / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    slow.parent.mkdir()
    slow.write_text("#!/bin/sh\nsleep 3\n")
    slow.chmod(0o755)
    monkeypatch.setattr(sys, "exec_prefix", str(tmp_path))
    deps.find_python.cache_clear()  # looked for once per session: this session starts here
    try:
        dialog = InstallDialog(tmp_path / ".deps" / "py311")
        dialog.remove_button.click()
        start = time.monotonic()
        dialog.remove_prompt.button(QMessageBox.StandardButton.Yes).click()
        assert time.monotonic() - start < 1 and dialog.running() and dialog.process is None
        _finish(dialog)
        assert time.monotonic() - start > 3
    finally:
        deps.find_python.cache_clear()
    log = dialog.log.toPlainText()
    assert f"$ {sys.executable} -m df4lcz_plugin.runtime.dependencies remove" in log and "does not exist" in log, log
    assert "removed" in dialog.restart_prompt.text()
    dialog.close()


def test_a_killed_installers_pip_keeps_other_installers_out(tmp_path):
    """The installer killed at once (Windows Cancel, the 10 s SIGKILL) while its pip still runs: another install
    into that folder is refused instead of deleting the staging folder pip writes into, until pip ends."""
    import psutil

    target = tmp_path / ".deps" / "py311"
    zipp = dependencies.Pin("zipp", "4.1.2", None)
    installer = subprocess.Popen([sys.executable, "-m", "df4lcz_plugin.runtime.dependencies", "install", "--variant",
                                  "light", "--target", str(target)], cwd=ROOT, stdout=subprocess.DEVNULL)
    pip = None
    try:
        deadline = time.monotonic() + 60
        while not psutil.Process(installer.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        [pip] = psutil.Process(installer.pid).children()
        pip.suspend()  # pip between two lines of output, which it could no longer write
        installer.kill()
        installer.wait()
        with pytest.raises(dependencies.InstallError, match="Another installer, or the pip it started, is still"):
            dependencies.install_package(zipp, target)
    finally:
        installer.kill()
        if pip is not None:
            pip.kill()
    while pip.is_running() and pip.status() != psutil.STATUS_ZOMBIE:  # no longer this process's child to wait for
        time.sleep(0.01)
    dependencies.install_package(zipp, target)
    assert dependencies.installed(target, "zipp", "4.1.2") and not dependencies.staging_folder(target).exists()


def test_remove_deletes_only_dependency_folders(tmp_path):
    """remove refuses folders named like one but not one, and a link; it deletes what an interrupted removal
    left."""
    for name in ("pyutils", "py3x", "python"):
        folder = tmp_path / ".deps" / name
        folder.mkdir(parents=True)
        with pytest.raises(dependencies.InstallError, match="is not a plugin dependency folder"):
            dependencies.remove(folder)
        assert folder.is_dir()
    link = tmp_path / "other" / ".deps" / "py311"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / ".deps" / "pyutils")
    with pytest.raises(dependencies.InstallError, match=f"is a symbolic link to {tmp_path}/.deps/pyutils"):
        dependencies.remove(link)
    assert link.is_symlink() and (tmp_path / ".deps" / "pyutils").is_dir()

    target = tmp_path / ".deps" / "py311"
    trash = dependencies.trash_folder(target)
    for folder in (target / "pkg", trash / "half"):  # trash: what a removal killed while deleting left
        folder.mkdir(parents=True)
        (folder / "module.py").write_text("")
    assert dependencies.remove(target) is True
    assert not target.exists() and not trash.exists()
    (trash / "half").mkdir(parents=True)  # a killed removal, the folder itself already gone
    assert dependencies.remove(target) is False and not trash.exists()


def test_full_with_the_other_pytorch_build(plugin, tmp_path):
    """Full is offered with the platform's PyTorch builds; the non-default one (CPU-only here, from
    download.pytorch.org, which this machine cannot reach) gives this command and these pip command lines."""
    from df4lcz.algorithms.install_dialog import InstallDialog

    dialog = InstallDialog(tmp_path / ".deps" / "py311")
    assert not dialog.torch.isEnabled()  # light is chosen
    dialog.choices["full"].setChecked(True)
    assert dialog.torch.isEnabled() and [dialog.torch.itemData(i) for i in range(dialog.torch.count())] == \
        list(dependencies.torch_builds())
    dialog.torch.setCurrentIndex(1)
    assert dialog.install_arguments() == ["-m", "df4lcz_plugin.runtime.dependencies", "install", "--variant", "full",
                                          "--torch", "cpu", "--target", str(tmp_path / ".deps" / "py311")]
    assert dialog.states["full"].text() == "not installed"

    cpu = {pin.name: pin for pin in dependencies.plan("full", "cpu", "linux")}
    assert cpu["torch"] == ("torch", "2.14.0+cpu", "https://download.pytorch.org/whl/cpu")
    assert cpu["torchvision"].version.endswith("+cpu") and cpu["timm"].index is None
    assert not [name for name in cpu if name.startswith(("nvidia-", "cuda-")) or name == "triton"]
    assert dependencies.pip_command(cpu["torch"], "STAGING")[-3:] == [
        "--index-url", "https://download.pytorch.org/whl/cpu", "torch==2.14.0+cpu"]
    # The default is the registry's PyTorch with its CUDA wheels: exactly the pin file.
    assert dependencies.plan("full") == [(name, version, None) for name, version in dependencies.pins("full")]
    windows = {pin.name: pin for pin in dependencies.plan("full", "cuda", "win32")}
    assert windows["torch"].index.endswith("/cu130") and "nvidia-cublas" not in windows
    assert "nvidia-cublas" not in {pin.name for pin in dependencies.plan("full", platform="win32")}
    with pytest.raises(dependencies.InstallError, match="no 'cuda' PyTorch build for darwin"):
        dependencies.plan("full", "cuda", "darwin")


def test_install_package_replaces_versions_and_merges_shared_folders(tmp_path):
    """Real pip, real wheels: a newer version replaces the older one's files; two packages sharing the nvidia/
    namespace folder both stay whole."""
    target = tmp_path / ".deps" / "py"
    for version in ("4.1.0", "4.1.2"):
        dependencies.install_package(dependencies.Pin("zipp", version, None), target)
    assert [p.name for p in target.glob("zipp-*.dist-info")] == ["zipp-4.1.2.dist-info"]
    for name, version in (("nvidia-nvtx", "13.0.85"), ("nvidia-cuda-runtime", "13.0.96")):
        dependencies.install_package(dependencies.Pin(name, version, None), target)
    missing, strays = _whole(target)
    assert len(missing) == 3 and not any(missing.values()) and not strays, (missing, strays)
    assert not dependencies.staging_folder(target).exists()


def test_find_python_finds_qgis_python_not_the_one_on_path():
    """Inside QGIS, embedded Python takes sys.executable from PATH's python3, which may be another installation
    (on this machine pyenv's 3.11, with numpy 2): the interpreter found is QGIS's own (same sys.exec_prefix)."""
    import shutil

    qgis_python = "/usr/bin/python3"
    probe = ("import sys; sys.executable = sys.argv[1]; from df4lcz_plugin.runtime import dependencies as d; "
             "print(d.find_python())")
    found = subprocess.run([qgis_python, "-c", probe, shutil.which("python3")], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    where = "import sys; print(sys.version_info[:2], sys.exec_prefix)"
    assert subprocess.run([found, "-c", where], capture_output=True, text=True).stdout == \
        subprocess.run([qgis_python, "-c", where], capture_output=True, text=True).stdout


_DESKTOP_PROBE = """
from qgis.PyQt.QtWidgets import QPushButton
from qgis.utils import iface, loadPlugin, plugins, startPlugin, unloadPlugin

def entries():
    for action in iface.pluginMenu().actions():
        if action.menu() is not None and action.text().replace("&", "") == "DF4LCZ":
            return [a.text() for a in action.menu().actions()]
    return []

def notices():
    return [{"text": item.text(), "buttons": [b.text() for b in item.findChildren(QPushButton)]}
            for item in iface.messageBar().items()]

def probe(out):
    out["entries"], out["notices"] = entries(), notices()
    out["unloaded"] = unloadPlugin("df4lcz")
    out["entries_after_unload"], out["notices_after_unload"] = entries(), notices()
    out["restarted"] = loadPlugin("df4lcz") and startPlugin("df4lcz")
    buttons = [b for item in iface.messageBar().items() for b in item.findChildren(QPushButton)
               if b.text() == "Install dependencies…"]
    buttons[0].click()
    dialog = plugins["df4lcz"].dialog
    out["dialog"] = [dialog.isVisible(), dialog.windowTitle()]
    out["notices_after_click"] = notices()
"""


@pytest.mark.timeout(700)
def test_plugin_menu_and_notice_in_the_qgis_desktop(tmp_path):
    """A fresh profile holding the plugin without dependencies, in the real QGIS desktop under Xvfb."""
    out = run_desktop_probe(tmp_path, _DESKTOP_PROBE)
    assert out["entries"] == [dependencies.INSTALL_ENTRY]
    [notice] = [n for n in out["notices"] if n["text"].startswith("its algorithms need Python packages")]
    assert "OpenVINO" in notice["text"] and notice["buttons"] == [dependencies.INSTALL_ENTRY]
    assert out["unloaded"] is True and out["entries_after_unload"] == []
    assert notice not in out["notices_after_unload"]
    assert out["restarted"] is True
    assert out["dialog"] == [True, f"DF4LCZ: {dependencies.INSTALL_ENTRY}"]
    assert notice not in out["notices_after_click"]
