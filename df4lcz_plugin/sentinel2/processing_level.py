"""Sentinel-2 processing levels: which one a stack is, which one a model was trained on, and what a mismatch means.

A stack made by ``sentinel2.stack.build_stack`` records its product's level in the GDAL metadata item
``PROCESSING_LEVEL`` ("Level-1C", "Level-2A" or "unknown"), a composite its inputs' level when they agree and
"mixed" when they do not; a VRT mosaic (gdalbuildvrt) carries none, so its sources are read. A model card records
the level its Sentinel-2 stream was trained on in ``streams.sentinel2.processing_level`` ("L1C" or "L2A"; absent
when unknown). The two levels differ by the atmospheric correction (L1C top-of-atmosphere, L2A surface
reflectance), which a model trained on one level does not undo on the other.
"""

from typing import Iterable, Optional

#: The levels a model card may name, with what their values are.
LEVELS = {"L1C": "top-of-atmosphere reflectance", "L2A": "surface reflectance"}
#: How ``PROCESSING_LEVEL`` spells each level in a stack's metadata.
METADATA_VALUES = {"L1C": "Level-1C", "L2A": "Level-2A"}
UNKNOWN = "unknown"
MIXED = "mixed"
#: Sources of a VRT read for their level, at most this deep (a VRT of VRTs of stacks).
_MAX_VRT_DEPTH = 3


def normalise_level(value: Optional[str]) -> str:
    """"L1C", "L2A", "mixed" or "unknown" from a ``PROCESSING_LEVEL`` value ("Level-1C", "Level-2A", the
    prototype "Level-2Ap", "L2A" …); anything else, or None, is "unknown"."""
    text = (value or "").strip().upper().replace("LEVEL-", "L")
    if text.startswith("L1C"):
        return "L1C"
    if text.startswith("L2A"):
        return "L2A"
    return MIXED if text == MIXED.upper() else UNKNOWN


def combine_levels(values: Iterable[Optional[str]]) -> str:
    """The ``PROCESSING_LEVEL`` of a raster made of rasters with these values: their common level, spelt as in a
    stack's metadata ("Level-1C", "Level-2A", "unknown"), when they agree, else "mixed"."""
    levels = {normalise_level(value) for value in values}
    if len(levels) != 1:
        return MIXED
    level = levels.pop()
    return METADATA_VALUES.get(level, level)


def stack_level(path: str, _depth: int = 0) -> str:
    """The normalised processing level ("L1C", "L2A", "mixed", "unknown") of the raster at ``path``: its
    ``PROCESSING_LEVEL`` metadata, or, for a VRT without it, the combined level of its source rasters."""
    from osgeo import gdal

    try:
        ds = gdal.Open(str(path))
    except RuntimeError:
        ds = None
    if ds is None:  # unreadable (GDAL without exceptions returns None)
        return UNKNOWN
    value = ds.GetMetadataItem("PROCESSING_LEVEL")
    if value or ds.GetDriver().ShortName != "VRT" or _depth >= _MAX_VRT_DEPTH:
        return normalise_level(value)
    sources = [source for source in (ds.GetFileList() or [])[1:] if source != str(path)]
    if not sources:
        return UNKNOWN
    return normalise_level(combine_levels(stack_level(source, _depth + 1) for source in sources))


def card_level(stream: dict) -> str:
    """The level a model's Sentinel-2 stream card says it was trained on ("L1C", "L2A"), or "unknown"."""
    return stream.get("processing_level", UNKNOWN)


def with_level(stream: dict, level: str) -> dict:
    """A copy of a Sentinel-2 stream card that records ``level`` (normalised) as the level it was trained on; the
    field is left out when ``level`` is not "L1C" or "L2A" (unknown, or a stack of mixed levels). A stream
    fine-tuned from a base model takes the level of the stack it was fine-tuned on, not the base model's."""
    stream = {key: value for key, value in stream.items() if key != "processing_level"}
    return {**stream, "processing_level": level} if level in LEVELS else stream


def level_warning(stack: str, model: str, model_id: str) -> Optional[str]:
    """The warning for a stack of level ``stack`` classified by model ``model_id`` trained on level ``model``
    (both normalised), or None when they agree or either is unknown."""
    if model not in LEVELS or stack == model or stack not in (*LEVELS, MIXED):
        return None
    what = (f"is Sentinel-2 {stack} ({LEVELS[stack]})" if stack in LEVELS
            else "was made of inputs of different or unrecorded Sentinel-2 processing levels (PROCESSING_LEVEL "
                 "'mixed')")
    return (f"This stack {what}; model {model_id} was trained on {model} ({LEVELS[model]}). Atmospheric correction "
            "changes the values the model sees (L2A is darker than L1C in blue and green, brighter in near infrared "
            "over vegetation), so expect a shift in the classes it maps. Fine-tune the model on training areas of "
            "your own, from stacks of the same source and level ('Train DF4LCZ model', df4lcz:trainmodel, which "
            "fine-tunes the shipped model or the BASE_MODEL you give), to remove it.")
