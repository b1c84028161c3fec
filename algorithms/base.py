"""What the DF4LCZ algorithms share: feedback adapter, dependency check and error translation."""

import contextlib

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException

from ..df4lcz_plugin import dependencies
from ..df4lcz_plugin.feedback import Canceled, Feedback


def gdal_source(layer, parameter):
    """The file GDAL reads for a raster ``layer`` (its source without QGIS's ``|option`` suffixes).

    Raises QgsProcessingException when the layer is missing or not read by GDAL.
    """
    if layer is None or layer.providerType() != "gdal":
        raise QgsProcessingException(f"{parameter} must be a raster layer read by GDAL (GeoTIFF, VRT, JPEG2000…).")
    return layer.source().split("|")[0]


class ProcessingFeedback(Feedback):
    """Engine feedback over a ``QgsProcessingFeedback`` (progress in %, cancel, log)."""

    def __init__(self, feedback):
        self._feedback = feedback

    def progress(self, fraction):
        self._feedback.setProgress(100.0 * fraction)

    def canceled(self):
        return self._feedback.isCanceled()

    def info(self, text):
        self._feedback.pushInfo(text)

    def warning(self, text):
        self._feedback.pushWarning(text)


@contextlib.contextmanager
def engine_errors():
    """Turn engine errors (bad input, cancel) into ``QgsProcessingException`` with the engine's message."""
    try:
        yield
    except QgsProcessingException:
        raise
    except Canceled as error:
        raise QgsProcessingException(str(error)) from None
    except (ValueError, RuntimeError, OSError) as error:
        raise QgsProcessingException(str(error)) from None


class DF4LCZAlgorithm(QgsProcessingAlgorithm):
    """Base class: group, and the check that the dependency variant a run needs is importable."""

    #: What a run needs of the plugin's dependencies (``df4lcz_plugin.dependencies``): "none" (QGIS's own Python
    #: and GDAL suffice), "light" or "full"; ``needs_for`` may decide it from the parameters.
    needs = "full"

    def group(self):
        return "Local climate zones"

    def groupId(self):  # noqa: N802 (QGIS API name)
        return "lcz"

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return type(self)()

    def needs_for(self, parameters, context):
        """The dependency variant this run needs: the class's ``needs`` unless a subclass looks at the parameters."""
        return self.needs

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API name)
        variant = self.needs_for(parameters, context)
        lacking = dependencies.missing(variant) if variant != "none" else []
        if lacking:
            return False, dependencies.install_advice(variant, lacking)
        return super().checkParameterValues(parameters, context)
