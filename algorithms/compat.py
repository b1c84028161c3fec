"""The Qt and QGIS names that differ between QGIS 3.22 (Qt 5) and later releases (QGIS 4, Qt 6), resolved once.

- ``QAction`` is in QtWidgets in Qt 5 and in QtGui in Qt 6; QGIS's ``qgis.PyQt`` shims re-export neither way
  (3.22's ``qgis.PyQt.QtGui`` has no QAction, QGIS 4's ``qgis.PyQt.QtWidgets`` none either).
- QGIS moved these enums into ``Qgis`` after 3.22 (``Qgis.WkbType`` and the unit enums in 3.30, the Processing ones and
  ``Qgis.RasterFileWriterResult`` in 3.36). Later 3.x releases keep the old class-level names only as
  monkey-patched aliases, which QGIS 4 may drop. Each constant below is the ``Qgis`` member where this QGIS has
  the enum, else 3.22's own scoped member (3.22 has no unscoped-only name here).
- ``QgsField`` takes a ``QMetaType.Type`` from QGIS 3.38 on (its ``QVariant.Type`` constructor is deprecated
  there, and PyQt6 has no ``QVariant.Type``); before, only a ``QVariant.Type`` of the same value.
"""

from __future__ import annotations

from qgis.core import (Qgis, QgsField, QgsProcessing, QgsProcessingParameterDefinition, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsRasterFileWriter, QgsUnitTypes, QgsWkbTypes)
from qgis.PyQt.QtCore import QMetaType, QVariant

try:
    from qgis.PyQt.QtGui import QAction  # noqa: F401 (re-exported) -- Qt 6
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # noqa: F401 (re-exported) -- Qt 5

if hasattr(Qgis, "ProcessingNumberParameterType"):  # QGIS ≥ 3.36
    NUMBER_INTEGER = Qgis.ProcessingNumberParameterType.Integer
    NUMBER_DOUBLE = Qgis.ProcessingNumberParameterType.Double
    FLAG_ADVANCED = Qgis.ProcessingParameterFlag.Advanced
    SOURCE_VECTOR_POLYGON = Qgis.ProcessingSourceType.VectorPolygon
    SOURCE_FILE = Qgis.ProcessingSourceType.File
    SOURCE_RASTER = Qgis.ProcessingSourceType.Raster
    FILE_FOLDER = Qgis.ProcessingFileParameterBehavior.Folder
else:
    NUMBER_INTEGER = QgsProcessingParameterNumber.Type.Integer
    NUMBER_DOUBLE = QgsProcessingParameterNumber.Type.Double
    FLAG_ADVANCED = QgsProcessingParameterDefinition.Flag.FlagAdvanced
    SOURCE_VECTOR_POLYGON = QgsProcessing.SourceType.TypeVectorPolygon
    SOURCE_FILE = QgsProcessing.SourceType.TypeFile
    SOURCE_RASTER = QgsProcessing.SourceType.TypeRaster
    FILE_FOLDER = QgsProcessingParameterFile.Behavior.Folder

if hasattr(Qgis, "DistanceUnit"):  # QGIS ≥ 3.30
    DISTANCE_METERS, AREA_SQUARE_KILOMETERS = Qgis.DistanceUnit.Meters, Qgis.AreaUnit.SquareKilometers
else:
    DISTANCE_METERS = QgsUnitTypes.DistanceUnit.DistanceMeters
    AREA_SQUARE_KILOMETERS = QgsUnitTypes.AreaUnit.AreaSquareKilometers
WKB_MULTIPOLYGON = Qgis.WkbType.MultiPolygon if hasattr(Qgis, "WkbType") else QgsWkbTypes.Type.MultiPolygon
RASTER_WRITER_SUCCESS = (Qgis.RasterFileWriterResult.Success if hasattr(Qgis, "RasterFileWriterResult")
                         else QgsRasterFileWriter.WriterError.NoError)

#: QgsField(name, QMetaType.Type) exists from QGIS 3.38 on.
FIELD_TAKES_QMETATYPE = Qgis.versionInt() >= 33800


def field(name: str, kind: QMetaType.Type) -> QgsField:
    """A QgsField named ``name`` of type ``kind``, a ``QMetaType.Type`` member (``QMetaType.Type.Int``, …)."""
    if FIELD_TAKES_QMETATYPE:
        return QgsField(name, kind)
    # Runs on QGIS < 3.38 (Qt 5) only; the Qt 6 check skips lines with this noqa.
    return QgsField(name, QVariant.Type(int(kind)))  # noqa: QGS402 -- QVariant.Type of the same value
