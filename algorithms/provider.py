"""The ``df4lcz`` Processing provider. It loads without PyTorch: the algorithms then explain what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .assess_accuracy import AssessAccuracyAlgorithm
from .base import RESOURCES, ToolboxMetadata, tr
from .build_object_graphs import BuildObjectGraphsAlgorithm
from .classify_dates import ClassifyDatesAlgorithm
from .classify_lcz import ClassifyLCZAlgorithm
from .global_lcz_map import GlobalLCZMapAlgorithm
from .lcz_factsheet import LCZFactsheetAlgorithm
from .lcz_filter import LCZFilterAlgorithm
from .lcz_parameters import LCZParametersAlgorithm
from .lcz_zone_statistics import LCZZoneStatisticsAlgorithm
from .sentinel2_composite import Sentinel2CompositeAlgorithm
from .sentinel2_fetch import Sentinel2FetchAlgorithm
from .sentinel2_stack import Sentinel2StackAlgorithm
from .train_model import TrainModelAlgorithm


class ShippedModel(ToolboxMetadata, QgsProcessingModelAlgorithm):
    """A bundled ``resources/models/<stem>.model3``, with the id ``df4lcz:<stem>`` (a model's own id is its
    title, spaces included), the algorithms' group and Toolbox metadata."""

    #: stem → (short description, keywords)
    METADATA: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "lcz_from_safe": ("Stacks a Sentinel-2 product and classifies local climate zones, in one step.",
                          ("safe", "model", "l1c", "l2a")),
        "lcz_from_composite": ("Composites several Sentinel-2 dates cloud-free and classifies local climate zones.",
                               ("composite", "cloud-free", "model", "safe")),
        "lcz_uses": ("Classifies local climate zones, maps their urban canopy parameters and their share per zone.",
                     ("model", "urban canopy parameters", "zonal histogram", "districts")),
        "lcz_for_extent": ("Fetches the Sentinel-2 stack of an extent from a STAC API and classifies local climate "
                           "zones, in one step.", ("stac", "fetch", "download", "earth search", "model", "composite")),
        "lcz_four_seasons": ("Maps local climate zones of an extent from the four seasons of a year (DJF, MAM, "
                             "JJA, SON; their probabilities averaged), Sentinel-2 fetched from a STAC API.",
                             ("stac", "seasons", "seasonal", "fetch", "earth search", "model")),
        "lcz_from_training_areas": ("From LCZ training areas to the LCZ map and its factsheet in one step (the LCZ "
                                    "Generator workflow): fetch Sentinel-2, train with bootstraps, classify, filter.",
                                    ("lcz generator", "training areas", "wudapt", "kml", "workflow", "factsheet",
                                     "stac", "model")),
    }

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.description, self.keywords = self.METADATA[self.path.stem]
        self.icon_name = self.path.stem
        self.loaded = self.fromFile(str(self.path))

    def name(self) -> str:
        return self.path.stem

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr(super().displayName())  # the model's title

    def createInstance(self) -> ShippedModel:  # noqa: N802 (QGIS API name)
        return ShippedModel(self.path)


class DF4LCZProvider(QgsProcessingProvider):
    """Provider id ``df4lcz``: the algorithms plus the bundled models in ``resources/models/*.model3``."""

    def id(self) -> str:
        return "df4lcz"

    def name(self) -> str:
        return "DF4LCZ"

    def longName(self) -> str:  # noqa: N802 (QGIS API name)
        return "DF4LCZ local climate zones"

    def icon(self) -> QIcon:
        return QIcon(str(RESOURCES / "icon.svg"))

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS API name)
        return ["tif"]

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API name)
        self.addAlgorithm(Sentinel2StackAlgorithm())
        self.addAlgorithm(Sentinel2CompositeAlgorithm())
        self.addAlgorithm(Sentinel2FetchAlgorithm())
        self.addAlgorithm(ClassifyLCZAlgorithm())
        self.addAlgorithm(ClassifyDatesAlgorithm())
        self.addAlgorithm(BuildObjectGraphsAlgorithm())
        self.addAlgorithm(TrainModelAlgorithm())
        self.addAlgorithm(AssessAccuracyAlgorithm())
        self.addAlgorithm(LCZParametersAlgorithm())
        self.addAlgorithm(LCZZoneStatisticsAlgorithm())
        self.addAlgorithm(GlobalLCZMapAlgorithm())
        self.addAlgorithm(LCZFilterAlgorithm())
        self.addAlgorithm(LCZFactsheetAlgorithm())
        for path in sorted((RESOURCES / "models").glob("*.model3")):
            model = ShippedModel(path)
            if model.loaded:
                self.addAlgorithm(model)
