"""``df4lcz:sentinel2stack``: build the 10-band, 10 m Sentinel-2 stack the LCZ models read."""

from __future__ import annotations

from typing import Any

from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterFile,
                       QgsProcessingParameterRasterDestination)

from ..df4lcz_plugin.sentinel2.stack import build_stack, read_product_info
from ..df4lcz_plugin.sentinel2.clouds import MODES
from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import DF4LCZAlgorithm, ProcessingFeedback, engine_errors, enum_parameter, tr
from .compat import FILE_FOLDER


class Sentinel2StackAlgorithm(DF4LCZAlgorithm):
    INPUT = "INPUT"
    CLOUD_MASK = "CLOUD_MASK"
    OUTPUT = "OUTPUT"
    PROCESSING_LEVEL = "PROCESSING_LEVEL"
    CLOUD_MASK_SOURCE = "CLOUD_MASK_SOURCE"
    CLOUD_PERCENT = "CLOUD_PERCENT"
    SHADOW_PERCENT = "SHADOW_PERCENT"
    SNOW_PERCENT = "SNOW_PERCENT"

    needs = "light"  # GDAL, and lightgbm for s2cloudless cloud masks; not PyTorch.
    description = "Stacks a Sentinel-2 L1C/L2A product (.SAFE) into the 10-band, 10 m raster the LCZ models read."
    keywords = ("safe", "l1c", "l2a", "band stack", "cloud mask", "s2cloudless", "jp2")
    icon_name = "sentinel2_stack"

    def name(self) -> str:
        return "sentinel2stack"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Build Sentinel-2 band stack")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Stacks a Sentinel-2 L1C or L2A product into the 10-band raster the LCZ models read: B2, B3, B4, "
                "B5, B6, B7, B8, B8A, B11, B12 (So2Sat LCZ42 order) at 10 m, as UInt16 on the 0–10000 reflectance "
                "scale with nodata 0. The 20 m bands are resampled bilinearly by GDAL, block by block.\n\n"
                "Input: a .SAFE folder, or a folder of per-band JP2/GeoTIFF files whose names end in the band "
                "(s2_B02.jp2, T33UUU_20170216T102101_B02.jp2, …_B05_20m.jp2).\n\n"
                "Products of processing baseline 04.00 and later carry a −1000 offset (RADIO_ADD_OFFSET in L1C, "
                "BOA_ADD_OFFSET in L2A); it is read from MTD_MSIL1C/2A.xml and removed, so the model sees the "
                "scale it was trained on. The processing level is recorded in the output's metadata.\n\n"
                "Clouds and cloud shadows (CLOUD_MASK): 'auto' takes the product's own mask (SCL in L2A, "
                "MSK_CLASSI_B00 in L1C of baseline 04.00 and later), else s2cloudless (its LightGBM model, run "
                "offline at 60 m; needs B01, B09 and B10); 'product' and 's2cloudless' insist on one source; "
                "'none' masks nothing. Shadows, where the source has none, are dark pixels where the clouds' "
                "shadows fall given the sun angles (product metadata, or the acquisition time in the file names). "
                "The mask is the stack's GDAL mask band (the 10 bands are untouched; every GDAL and QGIS tool sees "
                "it, and 'Classify local climate zones' leaves cells under it as no data). Snow is counted but not "
                "masked. The cloud, shadow and snow percentages are in the metadata and the outputs.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterFile(self.INPUT, tr("Sentinel-2 product folder (.SAFE or band files)"),
                                                     behavior=FILE_FOLDER))
        self.addParameter(enum_parameter(self.CLOUD_MASK, tr("Cloud and shadow mask"), MODES))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Sentinel-2 stack")))
        self.addOutput(QgsProcessingOutputString(self.PROCESSING_LEVEL, tr("Processing level")))
        self.addOutput(QgsProcessingOutputString(self.CLOUD_MASK_SOURCE, tr("Cloud mask source")))
        for name, label in ((self.CLOUD_PERCENT, tr("Cloud (%)")), (self.SHADOW_PERCENT, tr("Cloud shadow (%)")),
                            (self.SNOW_PERCENT, tr("Snow (%)"))):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        folder = self.parameterAsFile(parameters, self.INPUT, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with engine_errors():
            product = read_product_info(folder)
            # Every band file of the product counts, also the three the stack leaves out.
            check_output_paths({self.INPUT: list(product.band_files.values()) + [product.metadata_file]},
                               {self.OUTPUT: geotiff_output(output)})
            info = build_stack(folder, output, ProcessingFeedback(feedback),
                                         self.parameterAsEnumString(parameters, self.CLOUD_MASK, context))
        return {self.OUTPUT: output, self.PROCESSING_LEVEL: info.processing_level,
                self.CLOUD_MASK_SOURCE: info.cloud_mask_source, self.CLOUD_PERCENT: info.cloud_percent,
                self.SHADOW_PERCENT: info.shadow_percent, self.SNOW_PERCENT: info.snow_percent}
