"""``df4lcz:sentinel2fetch``: the Sentinel-2 stack of an extent, straight from a STAC API (no download by hand)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from qgis.core import (QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingOutputString, QgsProcessingParameterExtent,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterString, QgsSettings)

from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import DF4LCZAlgorithm, ProcessingFeedback, engine_errors, enum_parameter, tr
from .compat import FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER

if TYPE_CHECKING:
    from ..df4lcz_plugin.sentinel2.fetch import FetchRequest


def qgis_proxy() -> str | None:
    """The http(s) proxy of QGIS's Network settings as a URL (scheme, optional credentials, host, port), or None.

    Read from QgsSettings, as QgsNetworkAccessManager reads it, so it applies in a Processing worker thread too.
    """
    settings = QgsSettings()
    if not settings.value("proxy/proxyEnabled", False, type=bool):
        return None
    host = str(settings.value("proxy/proxyHost", "", type=str)).strip()
    if not host:
        return None
    port = settings.value("proxy/proxyPort", "", type=str)
    user = urllib.parse.quote(str(settings.value("proxy/proxyUser", "", type=str)), safe="")
    password = urllib.parse.quote(str(settings.value("proxy/proxyPassword", "", type=str)), safe="")
    credentials = f"{user}:{password}@" if user else ""
    return f"http://{credentials}{host}{':' + str(port) if port else ''}"


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise QgsProcessingException(f"{name}={value!r} is not an ISO date; give it as YYYY-MM-DD, e.g. "
                                     "2024-06-01.") from None


class Sentinel2FetchAlgorithm(DF4LCZAlgorithm):
    EXTENT = "EXTENT"
    START_DATE = "START_DATE"
    END_DATE = "END_DATE"
    MAX_SCENE_CLOUD = "MAX_SCENE_CLOUD"
    STAC_API = "STAC_API"
    COLLECTION = "COLLECTION"
    CLOUD_MASK = "CLOUD_MASK"
    MAX_DATES = "MAX_DATES"
    MIN_CLEAR = "MIN_CLEAR"
    MAX_DOWNLOAD_MB = "MAX_DOWNLOAD_MB"
    OUTPUT = "OUTPUT"
    OBSERVATIONS = "OBSERVATIONS"
    SUMMARY = "SUMMARY"

    needs = "light"  # pystac-client and GDAL; not PyTorch.
    description = "Fetches the Sentinel-2 stack of an extent from a STAC API (Earth Search by default)."
    keywords = ("stac", "fetch", "download", "earth search", "planetary computer", "cog", "l2a", "composite")
    icon_name = "sentinel2_fetch"

    def name(self) -> str:
        return "sentinel2fetch"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Fetch Sentinel-2 for an extent (STAC)")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        from ..df4lcz_plugin.sentinel2.stac import STAC_APIS

        apis = "; ".join(f"{name}: {api.url}, {api.collection}" for name, api in STAC_APIS.items())
        return tr("Searches a STAC API for Sentinel-2 L2A scenes over EXTENT from START_DATE to END_DATE (ISO "
                  "dates), reads only the extent's window of each band from the cloud-optimized GeoTIFFs (GDAL "
                  "/vsicurl/, cached in the user cache: a second run downloads nothing, a killed one resumes), and "
                  "writes the 10-band stack the LCZ models read (B2 … B12, 10 m, UInt16 reflectance × 10000, in "
                  "the extent's UTM zone), exactly as 'Build Sentinel-2 band stack' writes it. It covers the extent "
                  "plus 160 m on each side: half a 320 m patch, so that classifying the extent maps its border "
                  "cells.\n\n"
                  f"STAC_API: a name ({apis}) or the URL of any STAC API; COLLECTION: its collection (empty: the "
                  "API's Sentinel-2 L2A one).\n\n"
                  "Scenes of one solar day are one date, their tiles mosaicked. With CLOUD_MASK=scl each date's "
                  "scene classification (SCL) is read first (kilobytes): dates with less than MIN_CLEAR % of the "
                  "extent clear are dropped before any band is downloaded, and clouds and shadows go into the "
                  "stack's mask band. The clearest MAX_DATES dates are kept: one gives a stack, several the "
                  "per-pixel median composite of their clear observations ('Build cloud-free Sentinel-2 "
                  "composite'). The expected download is logged first; above MAX_DOWNLOAD_MB the run is refused.\n\n"
                  "The offset of processing baseline 04.00 (−1000) is read from each asset's metadata and "
                  "removed. The output is L2A (surface reflectance); the shipped model was trained on L1C, and "
                  "the classification warns about it. QGIS's proxy settings apply.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        from ..df4lcz_plugin.sentinel2.fetch import MODES

        today = dt.date.today()
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent to fetch (any CRS)")))
        self.addParameter(QgsProcessingParameterString(self.START_DATE, tr("First acquisition date (YYYY-MM-DD)"),
                                                       defaultValue=(today - dt.timedelta(days=365)).isoformat()))
        self.addParameter(QgsProcessingParameterString(self.END_DATE, tr("Last acquisition date (YYYY-MM-DD)"),
                                                       defaultValue=today.isoformat()))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_SCENE_CLOUD, tr("Largest scene cloud cover (%)"),
                                                       NUMBER_DOUBLE, 50.0, minValue=0.0, maxValue=100.0))
        self.addParameter(QgsProcessingParameterString(
            self.STAC_API, tr("STAC API (earth-search, planetary-computer, or a URL)"), defaultValue="earth-search"))
        self.addParameter(QgsProcessingParameterString(self.COLLECTION, tr("Collection (empty: the API's L2A one)"),
                                                       defaultValue="", optional=True))
        self.addParameter(enum_parameter(self.CLOUD_MASK, tr("Cloud and shadow mask"), MODES))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_DATES, tr("Dates to combine (1: one date, no "
                                                                          "composite)"), NUMBER_INTEGER, 3,
                                                       minValue=1, maxValue=50))
        for name, label, default, top in ((self.MIN_CLEAR, tr("Smallest clear share of the extent per date (%)"),
                                           50.0, 100.0),
                                          (self.MAX_DOWNLOAD_MB, tr("Largest download (MB)"), 1000.0, 1e6)):
            parameter = QgsProcessingParameterNumber(name, label, NUMBER_DOUBLE, default, minValue=0.0, maxValue=top)
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Sentinel-2 stack")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OBSERVATIONS, tr("Clear observations per pixel (several dates)"), optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.SUMMARY, tr("Summary (JSON)")))

    def _request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> FetchRequest:
        from ..df4lcz_plugin.sentinel2.fetch import FetchRequest
        from ..df4lcz_plugin.sentinel2.stac import resolve_api

        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        start = _date(self.parameterAsString(parameters, self.START_DATE, context), self.START_DATE)
        end = _date(self.parameterAsString(parameters, self.END_DATE, context), self.END_DATE)
        if end < start:
            raise QgsProcessingException(f"END_DATE {end} is before START_DATE {start}.")
        return FetchRequest(
            api=resolve_api(self.parameterAsString(parameters, self.STAC_API, context),
                            self.parameterAsString(parameters, self.COLLECTION, context).strip()),
            extent=(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
            extent_crs=crs.toWkt(), start=start, end=end,
            max_scene_cloud=self.parameterAsDouble(parameters, self.MAX_SCENE_CLOUD, context),
            cloud_mask=self.parameterAsEnumString(parameters, self.CLOUD_MASK, context),
            max_dates=self.parameterAsInt(parameters, self.MAX_DATES, context),
            min_clear=self.parameterAsDouble(parameters, self.MIN_CLEAR, context),
            max_download_mb=self.parameterAsDouble(parameters, self.MAX_DOWNLOAD_MB, context),
            proxy=qgis_proxy())

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.sentinel2.cog_windows import WindowCache
        from ..df4lcz_plugin.sentinel2.fetch import fetch_sentinel2

        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        observations = self.parameterAsOutputLayer(parameters, self.OBSERVATIONS, context) or None
        with engine_errors():
            request = self._request(parameters, context)
            check_output_paths({}, {self.OUTPUT: geotiff_output(output),
                                    self.OBSERVATIONS: geotiff_output(observations)})
            summary = fetch_sentinel2(request, output, ProcessingFeedback(feedback), WindowCache(), observations)
        results = {self.OUTPUT: output, self.SUMMARY: json.dumps(summary)}
        if observations and len(summary["dates"]) > 1:
            results[self.OBSERVATIONS] = observations
        elif observations:
            feedback.pushWarning("OBSERVATIONS is not written: one date was kept, so there is no composite and no "
                                 "count of observations; raise MAX_DATES (or widen the dates) for a composite.")
        return results
