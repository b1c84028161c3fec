"""Sentinel-2 processing levels on real stacks: read from a stack, a VRT mosaic and a composite, recorded in and
checked on model cards. The warning a classification gives is tested through QGIS in test_wrong_maps.py."""

import json
import shutil

import pytest
from osgeo import gdal

from conftest import MODEL_CARD, raster_copy

from df4lcz_plugin.models.registry import ModelError, read_card
from df4lcz_plugin.sentinel2.processing_level import combine_levels, level_warning, stack_level, with_level
from df4lcz_plugin.sentinel2.composite import build_composite

WINDOW = [130, 480, 100, 100]  # srcWin (px) of the real stack: 1 km² of the farmland


def _labelled(s2_stack, path, level):
    return raster_copy(s2_stack, path, srcWin=WINDOW, metadataOptions=[f"PROCESSING_LEVEL={level}"])


def test_stack_and_mosaic_levels(s2_stack, tmp_path):
    l2a, l1c = _labelled(s2_stack, tmp_path / "a.tif", "Level-2A"), _labelled(s2_stack, tmp_path / "c.tif", "Level-1C")
    assert stack_level(s2_stack) == "unknown"  # band files without MTD xml or product name
    assert stack_level(l2a) == "L2A" and stack_level(l1c) == "L1C"
    for name, sources, expected in (("same", [l2a, _labelled(s2_stack, tmp_path / "b.tif", "Level-2A")], "L2A"),
                                    ("mixed", [l2a, l1c], "mixed"), ("unknown", [l2a, s2_stack], "mixed")):
        gdal.BuildVRT(str(tmp_path / f"{name}.vrt"), [str(p) for p in sources])  # gdalbuildvrt keeps no metadata
        assert stack_level(tmp_path / f"{name}.vrt") == expected, name
    assert combine_levels(["Level-2A", "Level-2Ap"]) == "Level-2A"  # the 2017 prototype products are L2A
    assert combine_levels(["unknown", "unknown"]) == "unknown"


def test_composite_carries_its_inputs_level(s2_stack, tmp_path):
    a, b = _labelled(s2_stack, tmp_path / "a.tif", "Level-2A"), _labelled(s2_stack, tmp_path / "b.tif", "Level-2A")
    summary = build_composite([a, b], tmp_path / "same.tif")
    assert summary["processing_level"] == "Level-2A"
    assert gdal.Open(str(tmp_path / "same.tif")).GetMetadataItem("PROCESSING_LEVEL") == "Level-2A"
    c = _labelled(s2_stack, tmp_path / "c.tif", "Level-1C")
    build_composite([a, c], tmp_path / "mixed.tif")
    assert gdal.Open(str(tmp_path / "mixed.tif")).GetMetadataItem("PROCESSING_LEVEL") == "mixed"
    warning = level_warning(stack_level(tmp_path / "mixed.tif"), "L1C", "sen2lcznet_so2sat")
    assert warning.startswith("This stack was made of inputs of different or unrecorded Sentinel-2 processing "
                              "levels (PROCESSING_LEVEL 'mixed'); model sen2lcznet_so2sat was trained on L1C")


def test_a_fine_tuned_stream_takes_the_level_of_its_stack():
    shipped = read_card(MODEL_CARD).stream("sentinel2")
    assert with_level(shipped, "L2A")["processing_level"] == "L2A"
    assert "processing_level" not in with_level(shipped, "mixed")
    assert "processing_level" not in with_level(shipped, "unknown")
    assert shipped["processing_level"] == "L1C"  # the card itself is untouched


@pytest.mark.parametrize("value, accepted", [(None, True), ("L2A", True), ("l2a", False), (["L1C"], False)])
def test_card_processing_level_is_checked(tmp_path, value, accepted):
    card = json.loads(MODEL_CARD.read_text())
    card["streams"]["sentinel2"].pop("processing_level")
    if value is not None:  # None: a card written before the field existed
        card["streams"]["sentinel2"]["processing_level"] = value
    (tmp_path / "m.json").write_text(json.dumps(card))
    shutil.copy(MODEL_CARD.with_suffix(".safetensors"), tmp_path / "m.safetensors")
    if accepted:
        assert read_card(tmp_path / "m.json").stream("sentinel2").get("processing_level") == value
        return
    with pytest.raises(ModelError, match=r"'streams.sentinel2.processing_level' is .*; it must be \"L1C\" "
                                         r"\(top-of-atmosphere reflectance\) or \"L2A\" \(surface reflectance\)"):
        read_card(tmp_path / "m.json")
