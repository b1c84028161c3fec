"""The dependency installer dialog (Plugins ▸ DF4LCZ ▸ Install dependencies…).

It runs the installer's own command line (``python -m df4lcz_plugin.runtime.dependencies install|remove``) in a QProcess,
with the Python interpreter of QGIS's version (``dependencies.find_python``, looked for in a thread): QGIS stays
responsive, the output is a live log, the ``[done/total]`` lines drive the progress bar, and Cancel stops the
process, which leaves every package whole. Nothing is installed into QGIS's own Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, QTimer
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (QAbstractButton, QComboBox, QDialog, QHBoxLayout, QLabel, QMessageBox,
                                 QPlainTextEdit, QProgressBar, QPushButton, QRadioButton, QVBoxLayout, QWidget)

from ..df4lcz_plugin.runtime import dependencies

#: Variant → (radio button text, what it is enough for).
VARIANTS: dict[str, tuple[str, str]] = {
    "light": ("Light: OpenVINO, safetensors, LightGBM, SciPy, Dask (about 100 MB)",
              "Sentinel-2 stack and composites, classification on the CPU, the Dask command line."),
    "full": ("Full: light plus PyTorch, torch-geometric, Segment Anything, MobileSAM (about 5 GB)",
             "Everything: also VHR fusion with SAM, object graphs, training, and NVIDIA GPUs (CUDA)."),
}
#: PyTorch build → what it runs on.
BUILDS: dict[str, str] = {"cuda": "CUDA: NVIDIA GPUs and the CPU", "cpu": "CPU only, smaller"}
if sys.platform == "darwin":
    BUILDS["cpu"] = "CPU and Apple GPUs (MPS)"
#: How long Cancel waits for the installer to stop cleanly (it finishes moving a package in) before killing it, ms.
KILL_AFTER_MS = 10000
#: Runs ``dependencies.find_python`` (interpreters, seconds at worst) away from the GUI thread.
_LOOKUP = ThreadPoolExecutor(max_workers=1)


def _display(path: str | os.PathLike[str]) -> str:
    """``path`` with the home folder written ``~``: shorter, and the same for every user."""
    try:
        return str(Path("~") / Path(path).relative_to(Path.home()))
    except ValueError:
        return str(path)


class InstallDialog(QDialog):
    """Installs or removes the plugin's dependencies in ``target`` (Path; default: this plugin's
    ``.deps/py<XY>``). Non-modal: ``show()`` it; the work runs in ``self.process`` (a QProcess while running)."""

    def __init__(self, target: str | os.PathLike[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.target = Path(target) if target else dependencies.deps_folder(dependencies.PLUGIN_ROOT)
        self.process: QProcess | None = None
        self.restart_prompt: QMessageBox | None = None
        self.remove_prompt: QMessageBox | None = None
        self._task: str | None = None
        self._arguments: list[str] = []
        self._cancelled, self._partial = False, ""
        # The Future of dependencies.find_python while the interpreter is looked for.
        self._lookup: Future[str] | None = None
        self._waiter = QTimer(self)
        self._waiter.setInterval(50)
        self._waiter.timeout.connect(self._launch)
        # Cancel's kill: a child timer, which goes with the dialog (a singleShot lambda would outlive it).
        self._killer = QTimer(self)
        self._killer.setSingleShot(True)
        self._killer.setInterval(KILL_AFTER_MS)
        self._killer.timeout.connect(self._kill)
        self.setWindowTitle(f"{dependencies.MENU}: {dependencies.INSTALL_ENTRY}")
        self.resize(760, 560)
        layout = QVBoxLayout(self)
        intro = QLabel("DF4LCZ runs on Python packages that QGIS does not ship. They are installed with pip into "
                       "the plugin's own folder; QGIS's Python and its numpy are left as they are.<br>"
                       f"Folder: <tt>{_display(self.target)}</tt>")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.choices: dict[str, QRadioButton] = {}
        self.states: dict[str, QLabel] = {}
        for variant, (title, use) in VARIANTS.items():
            self.choices[variant] = QRadioButton(title)
            self.states[variant] = QLabel()
            row = QHBoxLayout()
            row.addWidget(QLabel(use), 1)
            row.addWidget(self.states[variant])
            row.setContentsMargins(24, 0, 0, 6)
            layout.addWidget(self.choices[variant])
            layout.addLayout(row)
        self.choices["light"].setChecked(True)
        self.torch = QComboBox()
        for build, index in dependencies.torch_builds().items():
            source = urlparse(index).netloc if index else "your package index, the default"
            self.torch.addItem(f"{BUILDS[build]} (from {source})", build)
        builds = QHBoxLayout()
        builds.setContentsMargins(24, 0, 0, 6)
        builds.addWidget(QLabel("PyTorch build:"))
        builds.addWidget(self.torch, 1)
        layout.addLayout(builds)
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m packages")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        for widget in (self.progress, self.status, self.log):
            layout.addWidget(widget)
        buttons = QHBoxLayout()
        self.remove_button = QPushButton("Remove dependencies")
        self.install_button = QPushButton("Install")
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        for button in (self.install_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.install_button.setDefault(True)
        self.install_button.clicked.connect(self.install)
        self.cancel_button.clicked.connect(self.cancel)
        self.remove_button.clicked.connect(self.ask_remove)
        self.close_button.clicked.connect(self.close)
        self.choices["full"].toggled.connect(self._update)
        self.torch.currentIndexChanged.connect(self._update)
        self._update()

    def variant(self) -> str:
        """The chosen variant: "light" or "full"."""
        return "full" if self.choices["full"].isChecked() else "light"

    def install_arguments(self) -> list[str]:
        """Arguments (list of str) of the installer's command for the current choices, after the interpreter."""
        build = ["--torch", self.torch.currentData()] if self.variant() == "full" else []
        return ["-m", "df4lcz_plugin.runtime.dependencies", "install", "--variant", self.variant(), *build,
                "--target", str(self.target)]

    def running(self) -> bool:
        """True from an Install or Remove click until its installer ends."""
        return self._lookup is not None or (self.process is not None
                                            and self.process.state() != QProcess.ProcessState.NotRunning)

    def install(self) -> None:
        """Start installing the chosen variant (no-op while something runs)."""
        self._start("install", self.install_arguments())

    def ask_remove(self) -> None:
        """Ask (non-modal ``self.remove_prompt``) whether to delete the dependency folder; Yes deletes it."""
        self.remove_prompt = QMessageBox(QMessageBox.Icon.Question, self.windowTitle(),
                                         f"Delete {_display(self.target)} and every package in it?",
                                         QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        self.remove_prompt.buttonClicked.connect(self._remove_answered)
        self.remove_prompt.open()

    def _remove_answered(self, button: QAbstractButton) -> None:
        if self.remove_prompt is not None and \
                self.remove_prompt.standardButton(button) == QMessageBox.StandardButton.Yes:
            self._start("remove", ["-m", "df4lcz_plugin.runtime.dependencies", "remove", "--target", str(self.target)])

    def cancel(self) -> None:
        """Stop the running installer: SIGTERM lets it finish moving the current package in (Windows has no such
        signal for it: it and its pip are killed, and the package's dist-info, moved last, keeps the folder
        consistent). While the interpreter is looked for, the installer is not started."""
        if not self.running():
            return
        self._cancelled = True
        self.log.appendPlainText("Cancelling…")
        process = self.process
        if self._lookup is not None or process is None:  # not started yet
            return
        if sys.platform == "win32":  # kill() would end the installer alone, and its pip would write on
            # By full path: a taskkill.exe earlier on PATH would be started instead.
            taskkill = [os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "taskkill.exe"),
                        "/T", "/F", "/PID", str(process.processId())]
            if subprocess.run(taskkill, capture_output=True,  # nosec B603
                              creationflags=dependencies.NO_WINDOW).returncode:
                process.kill()
            return
        process.terminate()
        if not self._killer.isActive():
            self._killer.start()

    def _kill(self) -> None:
        if self.process is not None and self.running():  # the cancelled installer: _finished stops this timer
            self.process.kill()

    def stop(self) -> None:
        """Cancel and wait for the installer to end (for the plugin's unload)."""
        self.cancel()
        self._waiter.stop()
        self._killer.stop()
        self._lookup = None
        process = self.process
        if process is not None and self.running() and not process.waitForFinished(KILL_AFTER_MS):
            process.kill()
            process.waitForFinished()

    def _start(self, task: str, arguments: list[str]) -> None:
        """Look for the interpreter in ``_LOOKUP``; ``_launch`` starts ``task`` once it is found."""
        if self.running():
            return
        self._task, self._arguments, self._cancelled, self._partial = task, arguments, False, ""
        self._lookup = _LOOKUP.submit(dependencies.find_python)
        self.progress.setRange(0, 0)
        self.status.setText("Looking for the Python interpreter QGIS runs…")
        self._waiter.start()
        self._update()

    def _launch(self) -> None:
        lookup = self._lookup
        if lookup is None or not lookup.done():
            return
        self._waiter.stop()
        self._lookup = None
        try:
            python = lookup.result()
        except dependencies.InstallError as error:
            return self._not_started(str(error))
        if self._cancelled:
            return self._not_started("Cancelled before the installer started; nothing changed.")
        task, arguments = self._task, self._arguments
        self.process = QProcess(self)
        self.process.setProgram(python)
        self.process.setArguments(arguments)
        self.process.setWorkingDirectory(str(dependencies.PLUGIN_ROOT))
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")  # lines as they come, not when a buffer fills
        environment.insert("PYTHONIOENCODING", "utf-8")
        self.process.setProcessEnvironment(environment)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.log.appendPlainText(f"$ {python} {' '.join(arguments)}")
        self.progress.setRange(0, 0)  # busy until the first [done/total] line
        self.status.setText("Removing…" if task == "remove" else "Installing…")
        self.process.start()
        self._update()

    def _read(self) -> None:
        if self.process is None:  # never: the signal's sender is the running process
            return
        text = self._partial + bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def _line(self, line: str) -> None:
        self.log.appendPlainText(line)
        progress = dependencies.PROGRESS.match(line)
        if progress:
            done, total = int(progress[1]), int(progress[2])
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self._update()

    def _error(self, error: QProcess.ProcessError) -> None:
        if self.process is not None and error == QProcess.ProcessError.FailedToStart:
            self._report(f"Could not start {self.process.program()}: {self.process.errorString()}")

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._killer.stop()
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        if self.progress.maximum() == 0:  # nothing was to do: no progress line came
            self.progress.setRange(0, 1)
        if self._cancelled:
            self._report(self._cancelled_text())
        elif code or status != QProcess.ExitStatus.NormalExit:
            self._report(f"The installer failed (exit status {code}); the log above says why.")
        elif self._task == "install":
            self.progress.setValue(self.progress.maximum())
            dependencies.use(self.target)
            self._restart(f"The '{self.variant()}' dependencies are installed. Restart QGIS to use them.")
        else:
            self._restart("The dependencies are removed. Restart QGIS so that it stops using them.")
        self._update()

    def _not_started(self, text: str) -> None:
        self.progress.setRange(0, 1)
        self._report(text)
        self._update()

    def _cancelled_text(self) -> str:
        if self._task == "install":
            return "Cancelled. The packages installed so far are whole and kept; Install finishes the job."
        if self.target.exists():
            return f"Cancelled before anything was deleted: {_display(self.target)} is whole."
        return ("Cancelled while deleting: the dependencies are removed; Remove dependencies deletes what is left "
                f"of them in {_display(dependencies.trash_folder(self.target))}. Restart QGIS so that it stops "
                "using them.")

    def _report(self, text: str) -> None:
        self.status.setText(text)
        self.log.appendPlainText(text)

    def _restart(self, text: str) -> None:
        """Say ``text`` and show it in the non-modal ``self.restart_prompt`` (the dialog reappears if closed)."""
        self._report(text)
        self.show()
        self.restart_prompt = QMessageBox(QMessageBox.Icon.Information, self.windowTitle(), text,
                                          QMessageBox.StandardButton.Ok, self)
        self.restart_prompt.open()

    def _update(self) -> None:
        """Enable what may be used now, and show how much of each variant the target holds."""
        running = self.running()
        for widget in (self.install_button, self.remove_button, *self.choices.values()):
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.torch.setEnabled(not running and self.variant() == "full" and self.torch.count() > 1)
        try:
            for variant, label in self.states.items():
                pins = dependencies.plan(variant, self.torch.currentData())
                lack = len(dependencies.lacking(variant, self.torch.currentData(), self.target))
                inside = sum(dependencies.installed(self.target, pin.name, pin.version) for pin in pins)
                label.setText("installed" if not lack else "not installed" if not inside else
                              f"{len(pins) - lack} of {len(pins)} packages installed")
        except dependencies.InstallError as error:  # no pinned set for this Python
            self.install_button.setEnabled(False)
            self.status.setText(str(error))
