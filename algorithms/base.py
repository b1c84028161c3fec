"""What the DF4LCZ algorithms share: Toolbox metadata, the DEVICE choice, feedback adapter, dependency check and
error translation."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingParameterEnum, QgsRasterLayer)
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtGui import QIcon

from ..df4lcz_plugin.runtime import dependencies
from ..df4lcz_plugin.runtime.feedback import Canceled, Feedback
from .compat import FLAG_ADVANCED

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
#: The documentation site shipped in the plugin (built from docs/ by scripts/plugin_files.py): the Help button opens
#: an algorithm's reference page there, offline. No copy of the site is published online.
DOCS_SITE = RESOURCES.parent / "docs_site"
#: Tags of every DF4LCZ algorithm and model (the Toolbox search matches them).
TAGS = ("lcz", "local climate zones", "urban", "climate", "wudapt", "sentinel-2", "classification",
        "segment anything")


def tr(text: str) -> str:
    """``text`` translated in the plugin's "DF4LCZ" context (unchanged until a translation is installed)."""
    return QCoreApplication.translate("DF4LCZ", text)


@functools.lru_cache(maxsize=None)
def cuda_devices() -> tuple[str, ...]:
    """Names of the CUDA GPUs of this machine, in PyTorch's order; empty without an NVIDIA driver or GPU.

    Asked of the NVIDIA driver through ctypes, once per process: importing PyTorch at provider load would be slow,
    and a light install has none. The driver honours CUDA_VISIBLE_DEVICES as PyTorch does.
    """
    try:
        cuda = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return ()
    count = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return ()
    names = []
    for index in range(count.value):
        device, name = ctypes.c_int(), ctypes.create_string_buffer(256)
        ok = cuda.cuDeviceGet(ctypes.byref(device), index) == 0 and cuda.cuDeviceGetName(name, 256, device) == 0
        names.append(name.value.decode(errors="replace") if ok else "GPU")
    return tuple(names)


def device_choices() -> list[str]:
    """DEVICE's choices: auto, cpu, then, with GPUs, cuda (the first, as PyTorch and the command line read it)
    and cuda:N for each."""
    gpus = [f"cuda:{index}" for index in range(len(cuda_devices()))]
    return ["auto", "cpu"] + (["cuda"] + gpus if gpus else [])


def enum_parameter(name: str, description: str, options: Iterable[str],
                   default: str | None = None) -> QgsProcessingParameterEnum:
    """A list parameter stored as the chosen option's text (static strings), not its index: saved models, batch
    runs and ``qgis_process … NAME=option`` keep their choice when options are added or reordered. ``default``:
    an option (the first if None); read the value with ``parameterAsEnumString``."""
    choices = list(options)
    parameter = QgsProcessingParameterEnum(name, description, options=choices,
                                           defaultValue=choices[0] if default is None else default)
    parameter.setUsesStaticStrings(True)
    return parameter


def device_parameter(name: str) -> QgsProcessingParameterEnum:
    """The DEVICE parameter: a list of the devices present, stored as its text (``cpu``, ``cuda:0``)."""
    gpus = "; ".join(f"cuda:{index} = {gpu}" for index, gpu in enumerate(cuda_devices()))
    description = tr("Device (auto: the first GPU if any, else the CPU)") + (f" — {gpus}" if gpus else "")
    return enum_parameter(name, description, device_choices(), "auto")


def segmentation_parameter(name: str) -> QgsProcessingParameterEnum:
    """The advanced SEGMENTATION parameter, stored as its text: ``tiles`` (shared segmentation, SAM once per
    320 m tile; the default) or ``footprint`` (the paper's: SAM on each footprint)."""
    from ..df4lcz_plugin.models.registry import SEGMENTATIONS

    label = tr("Segmentation (tiles: SAM once per 320 m tile, shared by overlapping footprints; footprint: the "
               "paper's, SAM per footprint)")
    parameter = enum_parameter(name, label, SEGMENTATIONS, "tiles")
    parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
    return parameter


def gdal_source(layer: QgsRasterLayer | None, parameter: str) -> str:
    """The file GDAL reads for a raster ``layer`` (its source without QGIS's ``|option`` suffixes).

    Raises QgsProcessingException when the layer is missing or not read by GDAL.
    """
    if layer is None or layer.providerType() != "gdal":
        raise QgsProcessingException(f"{parameter} must be a raster layer read by GDAL (GeoTIFF, VRT, JPEG2000…).")
    return str(layer.source().split("|")[0])


def write_filtered_output(output: str, filtered: str | None, palette_name: str, feedback: Feedback) -> None:
    """FILTERED_OUTPUT of the classify algorithms, when asked for (``filtered`` a path): the LCZ map ``output``
    filtered as the LCZ Generator does (``lcz.lcz_filter.write_filtered``: per-class Gaussian kernels), styled in
    the map's palette ``palette_name``."""
    from ..df4lcz_plugin.lcz.lcz_filter import write_filtered

    if filtered:
        write_filtered(output, filtered, palette_name, feedback)


class ProcessingFeedback(Feedback):
    """Engine feedback over a ``QgsProcessingFeedback`` (progress in %, cancel, log)."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        self._feedback = feedback

    def progress(self, fraction: float) -> None:
        self._feedback.setProgress(100.0 * fraction)

    def canceled(self) -> bool:
        return bool(self._feedback.isCanceled())

    def info(self, text: str) -> None:
        self._feedback.pushInfo(text)

    def warning(self, text: str) -> None:
        self._feedback.pushWarning(text)


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Turn engine errors (bad input, cancel) into ``QgsProcessingException`` with the engine's message."""
    try:
        yield
    except QgsProcessingException:
        raise
    except Canceled as error:
        raise QgsProcessingException(str(error)) from None
    except (ValueError, RuntimeError, OSError) as error:
        raise QgsProcessingException(str(error)) from None


class ToolboxMetadata:
    """Group, tags, short description, help link and icon, for the algorithms and the shipped models alike.

    A subclass sets ``description`` (one line), ``keywords`` (tags of its own) and ``icon_name``
    (``resources/icons/<icon_name>.svg``); its Help opens ``docs_site/reference/<name>.html``.
    """

    description: str = ""
    keywords: tuple[str, ...] = ()
    icon_name: str = ""

    def group(self) -> str:
        return tr("Local climate zones")

    def groupId(self) -> str:  # noqa: N802 (QGIS API name)
        return "lcz"

    def tags(self) -> list[str]:
        return list(TAGS + self.keywords)

    def shortDescription(self) -> str:  # noqa: N802 (QGIS API name)
        return tr(self.description)

    def helpUrl(self) -> str:  # noqa: N802 (QGIS API name)
        """The ``file://`` URL of this algorithm's page in the shipped site; empty (no Help button) without one."""
        page = DOCS_SITE / "reference" / f"{self.name()}.html"
        return QUrl.fromLocalFile(str(page)).toString() if page.is_file() else ""

    def svgIconPath(self) -> str:  # noqa: N802 (QGIS API name)
        return str(RESOURCES / "icons" / f"{self.icon_name}.svg")

    def icon(self) -> QIcon:
        return QIcon(self.svgIconPath())


class DF4LCZAlgorithm(ToolboxMetadata, QgsProcessingAlgorithm):
    """Base class: Toolbox metadata, the DEVICE check, and the check that the dependency variant a run needs is
    importable."""

    #: What a run needs of the plugin's dependencies (``df4lcz_plugin.runtime.dependencies``): "none" (QGIS's own Python
    #: and GDAL suffice), "light" or "full"; ``needs_for`` may decide it from the parameters.
    needs: str = "full"

    def createInstance(self) -> DF4LCZAlgorithm:  # noqa: N802 (QGIS API name)
        return type(self)()

    def needs_for(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """The dependency variant this run needs: the class's ``needs`` unless a subclass looks at the parameters."""
        return self.needs

    def checkParameterValues(self, parameters: dict[str, Any],  # noqa: N802 (QGIS API name)
                             context: QgsProcessingContext) -> tuple[bool, str]:
        # Before the variant: DEVICE=cuda without a GPU is the user's mistake, not a missing PyTorch.
        device = parameters.get("DEVICE")
        if isinstance(device, str) and device and device not in device_choices():
            found = ", ".join(cuda_devices()) or "no CUDA GPU"
            return False, (f"DEVICE={device} is not a device of this machine (the NVIDIA driver reports {found}); "
                           f"choose one of: {', '.join(device_choices())}.")
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            named = isinstance(definition, QgsProcessingParameterEnum) and definition.usesStaticStrings()
            if named and value not in (None, "") and not isinstance(value, list) and \
                    str(value) not in definition.options():
                # QGIS refuses an index too, with "Incorrect parameter value" alone.
                return False, (f"{definition.name()}={value} is not one of its options; give the option's name: "
                               f"{', '.join(definition.options())}.")
        variant = self.needs_for(parameters, context)
        try:
            lacking = dependencies.missing(variant) if variant != "none" else []
        except dependencies.InstallError as error:  # no pinned set for this Python
            return False, str(error)
        if lacking:
            return False, dependencies.install_advice(variant, lacking)
        return super().checkParameterValues(parameters, context)
