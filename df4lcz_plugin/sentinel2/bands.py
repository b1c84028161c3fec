"""Sentinel-2 band names and the So2Sat LCZ42 band order that the LCZ models expect."""

import re

#: So2Sat LCZ42 order (Zhu et al. 2020): the 10 m and 20 m bands; B1, B9 and B10 (60 m) are left out.
SO2SAT_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: Native resolution in metres of each Sentinel-2 MSI band.
NATIVE_RESOLUTION_M = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
                       "B9": 60, "B10": 60, "B11": 20, "B12": 20}
#: Band order of the ``band_id`` attributes in Sentinel-2 product metadata (MTD_MSIL1C/2A.xml).
METADATA_BAND_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

_BAND = re.compile(r"^B0?(1[0-2]|[1-9]|8A)$", re.IGNORECASE)


def normalise_band_name(name: str) -> str | None:
    """``"B02"``/``"b2"``/``"B8a"`` → ``"B2"``/``"B2"``/``"B8A"``; None if ``name`` is not a Sentinel-2 band."""
    match = _BAND.match(name.strip())
    return f"B{match.group(1).upper()}" if match else None
