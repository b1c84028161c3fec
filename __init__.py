"""DF4LCZ QGIS plugin: LCZ mapping with the DF4LCZ model, as a Processing provider (id ``df4lcz``)."""

import os

from .df4lcz_plugin.runtime import dependencies

dependencies.activate(os.path.dirname(__file__))


def classFactory(iface):  # noqa: N802 (QGIS API name)
    """QGIS plugin entry point."""
    from .algorithms.plugin import DF4LCZPlugin

    return DF4LCZPlugin(iface)
