"""The QGIS plugin object: registers the ``df4lcz`` Processing provider."""

from qgis.core import QgsApplication

from .provider import DF4LCZProvider


class DF4LCZPlugin:
    """Adds the provider in ``initProcessing`` (what ``qgis_process`` calls) and removes it in ``unload``."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        self.provider = DF4LCZProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
