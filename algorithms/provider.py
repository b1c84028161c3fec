"""The ``df4lcz`` Processing provider. It loads without PyTorch: the algorithms then explain what is missing."""

from pathlib import Path

from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .assess_accuracy import AssessAccuracyAlgorithm
from .build_object_graphs import BuildObjectGraphsAlgorithm
from .classify_lcz import ClassifyLCZAlgorithm
from .sentinel2_composite import Sentinel2CompositeAlgorithm
from .sentinel2_stack import Sentinel2StackAlgorithm
from .train_model import TrainModelAlgorithm

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


class DF4LCZProvider(QgsProcessingProvider):
    """Provider id ``df4lcz``: the algorithms plus the bundled models in ``resources/models/*.model3``."""

    def id(self):
        return "df4lcz"

    def name(self):
        return "DF4LCZ"

    def longName(self):  # noqa: N802 (QGIS API name)
        return "DF4LCZ local climate zones"

    def icon(self):
        return QIcon(str(RESOURCES / "icon.svg"))

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 (QGIS API name)
        return ["tif"]

    def loadAlgorithms(self):  # noqa: N802 (QGIS API name)
        self.addAlgorithm(Sentinel2StackAlgorithm())
        self.addAlgorithm(Sentinel2CompositeAlgorithm())
        self.addAlgorithm(ClassifyLCZAlgorithm())
        self.addAlgorithm(BuildObjectGraphsAlgorithm())
        self.addAlgorithm(TrainModelAlgorithm())
        self.addAlgorithm(AssessAccuracyAlgorithm())
        for path in sorted((RESOURCES / "models").glob("*.model3")):
            model = QgsProcessingModelAlgorithm()
            if model.fromFile(str(path)):
                self.addAlgorithm(model)
