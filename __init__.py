"""DF4LCZ QGIS plugin: LCZ mapping with the DF4LCZ model, as a Processing provider (id ``df4lcz``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .df4lcz_plugin.runtime import dependencies, torch_blas

if TYPE_CHECKING:
    from qgis.gui import QgisInterface

    from .algorithms.plugin import DF4LCZPlugin

dependencies.activate(os.path.dirname(__file__))
# QGIS on Linux loads the system BLAS globally; PyTorch's matrix products would run on it, 2× slower (torch_blas).
torch_blas.keep_own_blas()


def classFactory(iface: QgisInterface | None) -> DF4LCZPlugin:  # noqa: N802 (QGIS API name)
    """QGIS plugin entry point."""
    from .algorithms.plugin import DF4LCZPlugin

    return DF4LCZPlugin(iface)
