"""The one LCZ legend: codes, labels, palettes, and the QML built from it."""

import xml.etree.ElementTree as ET

import pytest

from df4lcz_plugin.lcz import legend


def test_codes_labels_and_palettes():
    assert legend.CODES == tuple(range(1, 18))
    assert legend.label(1) == "LCZ 1: Compact high-rise"
    assert legend.label(11) == "LCZ A: Dense trees"
    assert legend.label(17) == "LCZ G: Water"
    # Spot values from shared/design/lcz_reference.md §2 (a) and (b).
    assert legend.palette()[0] == "#910613" and legend.palette()[16] == "#656BFA"
    assert legend.palette("classic_wudapt")[13] == "#B9DB79"
    assert legend.rgb("#656BFA") == (101, 107, 250)
    with pytest.raises(ValueError, match="LCZ code 0"):
        legend.label(0)
    with pytest.raises(ValueError, match="official_2022"):
        legend.palette("rainbow")


@pytest.mark.parametrize("name", sorted(legend.PALETTES))
def test_qml_lists_17_labelled_classes(name):
    root = ET.fromstring(legend.qml(name))
    entries = root.findall(".//rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    assert [int(e.get("value")) for e in entries] == list(legend.CODES)
    assert [e.get("label") for e in entries] == [legend.label(c) for c in legend.CODES]
    assert [e.get("color").upper() for e in entries] == list(legend.palette(name))
