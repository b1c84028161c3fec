"""The QGIS plugin object: registers the ``df4lcz`` Processing provider and, in the desktop, the dependency
installer's menu entry and its notice when the dependencies are missing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qgis.core import Qgis, QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QPushButton

from ..df4lcz_plugin.runtime import dependencies
from .compat import QAction
from .install_dialog import InstallDialog
from .provider import DF4LCZProvider

if TYPE_CHECKING:  # for the annotations only: qgis_process starts the plugin without the desktop
    from qgis.gui import QgisInterface, QgsMessageBarItem

MENU = f"&{dependencies.MENU}"


class DF4LCZPlugin:
    """Adds the provider in ``initProcessing`` (what ``qgis_process`` calls); ``initGui`` adds Plugins ▸ DF4LCZ ▸
    Install dependencies… and, if the light dependencies are missing (``dependencies.missing``), a message-bar
    notice with the same button. ``unload`` removes all of it."""

    def __init__(self, iface: QgisInterface | None) -> None:
        self.iface = iface  # None where qgis_process or a script starts the plugin: initProcessing only
        self.provider: DF4LCZProvider | None = None
        self.install_action: QAction | None = None
        self.notice: QgsMessageBarItem | None = None
        self.dialog: InstallDialog | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API name)
        self.provider = DF4LCZProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def _desktop(self) -> QgisInterface:
        """The desktop's interface: initGui, and what it added (menu action, notice), run in the desktop only.
        Raises RuntimeError otherwise (a plugin started without an interface has no GUI; not an assert, which
        Bandit refuses in a plugin and ``python -O`` drops)."""
        if self.iface is None:
            raise RuntimeError("DF4LCZ's menu and notices exist in the QGIS desktop only.")
        return self.iface

    def initGui(self) -> None:  # noqa: N802 (QGIS API name)
        iface = self._desktop()
        self.initProcessing()
        self.install_action = QAction(dependencies.INSTALL_ENTRY, iface.mainWindow())
        self.install_action.triggered.connect(self.show_installer)
        iface.addPluginToMenu(MENU, self.install_action)
        try:
            lacking = dependencies.missing("light")
            more = f" and {len(lacking) - 1} more" if len(lacking) > 1 else ""
            text = f"its algorithms need Python packages that are not installed ({lacking[0]}{more})." if lacking else ""
        except dependencies.InstallError as error:  # no pinned set for this Python
            text = str(error)
        if text:
            self.notice = iface.messageBar().createMessage("DF4LCZ", text)
            button = QPushButton(dependencies.INSTALL_ENTRY, self.notice)
            button.clicked.connect(self.show_installer)
            self.notice.layout().addWidget(button)
            iface.messageBar().pushWidget(self.notice, Qgis.MessageLevel.Warning)

    def show_installer(self) -> None:
        """Show the installer dialog (one per plugin, kept while a run goes on) and drop the notice."""
        self._drop_notice()
        if self.dialog is None:
            self.dialog = InstallDialog(parent=self._desktop().mainWindow())
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

    def _drop_notice(self) -> None:
        if self.notice is not None and not sip.isdeleted(self.notice):  # the user may have closed it
            self._desktop().messageBar().popWidget(self.notice)
        self.notice = None

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.install_action is not None:
            self._desktop().removePluginMenu(MENU, self.install_action)
            self.install_action.deleteLater()
            self.install_action = None
        self._drop_notice()
        if self.dialog is not None:
            self.dialog.stop()
            self.dialog.deleteLater()
            self.dialog = None
