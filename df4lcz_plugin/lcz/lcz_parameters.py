"""The one table of LCZ urban canopy properties, beside the one LCZ legend: Stewart & Oke (2012), "Local
Climate Zones for urban temperature studies", BAMS 93(12):1879–1900, Table 3 (geometric and surface-cover
properties) and Table 4 (thermal, radiative and metabolic properties), as (low, high) per LCZ 1–10, A–G.

Where the values come from (the paper itself could not be opened here; three public machine-readable copies
were read and checked against each other):

- [L] ByMaxAnjos/LCZ4r@090bc68 ``R/lcz_get_parameters.R`` (``lcz.df``) and its port ByMaxAnjos/LCZ4py@19e1810
  ``LCZ4py/_internal/lcz_parameters_data.py`` (``_PARAM_RANGES``): one lineage, all ten properties.
- [X] Xorielle/LCZqgis@3c417d0 ``Matrix.py`` (``LB``/``RB``): Table 3's SVF, aspect ratio, building,
  impervious and pervious fractions and height (not TRC, not Table 4).

Findings of the cross-check:

- SVF, aspect ratio, building and pervious fractions, height: [L] and [X] agree on every closed range; they
  differ only at open ranges, where [L] writes invented point values (SVF of LCZ 8 "0.75", LCZ 9 "0.85",
  height "26" for "> 25 m", "2.9" for LCZ C "< 2 m") and [X] the physical limits (used here, see the rule).
- Impervious fraction: [L] repeats the building fraction for LCZ 2–10 (LCZ 2 40–70 instead of 30–50, LCZ 7
  60–90 instead of < 20…) and gives LCZ E "0–10" instead of "> 90"; [X] has the values used here, which are
  also the ones consistent with the pervious fractions (BSF + ISF + PSF can reach 100 %).
- Terrain roughness class: [L] only; its ranges are Davenport classes 1–8 and consistent with [X]'s z0.
- Admittance: [L] only, written "1.500", "1.200"… (R reads 1.5) beside "800", "700", "600": the thousands
  separator of the paper's "1,500" taken as a decimal point; restored here as 1500, 1200… LCZ A is "unknown"
  in the paper; [L] writes 0, here it is no data. LCZ 2's upper bound is 2000 in [L] (not confirmed by a second
  copy).
- Albedo: [L] only; every range is consistent with the paper's 0.02–0.35 span.
- Anthropogenic heat: [L] writes "< 75" as 74–74 and "> 300" as 310–310; here they follow the rule below.
- GeoClimate's LCZ table (its commented LCZ E row swaps impervious and pervious) was not found in the stored
  corpus, so it was not used.

Rule for open ranges ("> 25 m", "< 10 %", "> 0.9"): the missing bound is the property's physical limit where
it has one (0 below for every property; 100 % above for the fractions; 1 above for the sky view factor);
where it has none (aspect ratio "> 2" and "> 1", height "> 25 m", heat "> 300 W m⁻²"), the missing upper bound
is the stated bound itself, so high and middle are lower estimates for LCZ 1, 4, 10 and A. Water's height ("–")
is 0 m (no roughness elements).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from . import legend


@dataclass(frozen=True)
class Property:
    """One property of Tables 3–4: ``key`` (band name), ``title``, ``unit``, ``ranges`` ((low, high) for LCZ
    1–10, A–G, in code order 1–17; NaN where the paper gives no value)."""

    key: str
    title: str
    unit: str
    ranges: tuple


_NAN = float("nan")
#: The band the raster's ``.qml`` shows: the height of roughness elements.
STYLED_BAND = "HRE"
PROPERTIES = (
    Property("SVF", "Sky view factor", "1 (fraction 0–1)", (
        (0.2, 0.4), (0.3, 0.6), (0.2, 0.6), (0.5, 0.7), (0.5, 0.8), (0.6, 0.9), (0.2, 0.5), (0.7, 1.0),
        (0.8, 1.0), (0.6, 0.9), (0.0, 0.4), (0.5, 0.8), (0.7, 0.9), (0.9, 1.0), (0.9, 1.0), (0.9, 1.0),
        (0.9, 1.0))),
    Property("AR", "Aspect ratio (mean height-to-width of street canyons)", "1 (ratio)", (
        (2.0, 2.0), (0.75, 2.0), (0.75, 1.5), (0.75, 1.25), (0.3, 0.75), (0.3, 0.75), (1.0, 2.0), (0.1, 0.3),
        (0.1, 0.25), (0.2, 0.5), (1.0, 1.0), (0.25, 0.75), (0.25, 1.0), (0.0, 0.1), (0.0, 0.1), (0.0, 0.1),
        (0.0, 0.1))),
    Property("BSF", "Building surface fraction", "%", (
        (40, 60), (40, 70), (40, 70), (20, 40), (20, 40), (20, 40), (60, 90), (30, 50), (10, 20), (20, 30),
        (0, 10), (0, 10), (0, 10), (0, 10), (0, 10), (0, 10), (0, 10))),
    Property("ISF", "Impervious surface fraction", "%", (
        (40, 60), (30, 50), (20, 50), (30, 40), (30, 50), (20, 50), (0, 20), (40, 50), (0, 20), (20, 40),
        (0, 10), (0, 10), (0, 10), (0, 10), (90, 100), (0, 10), (0, 10))),
    Property("PSF", "Pervious surface fraction", "%", (
        (0, 10), (0, 20), (0, 30), (30, 40), (20, 40), (30, 60), (0, 30), (0, 20), (60, 80), (40, 50),
        (90, 100), (90, 100), (90, 100), (90, 100), (0, 10), (90, 100), (90, 100))),
    Property("HRE", "Height of roughness elements", "m", (
        (25, 25), (10, 25), (3, 10), (25, 25), (10, 25), (3, 10), (2, 4), (3, 10), (3, 10), (5, 15), (3, 30),
        (3, 15), (0, 2), (0, 1), (0, 0.25), (0, 0.25), (0, 0))),
    Property("TRC", "Terrain roughness class (Davenport et al. 2000)", "class 1–8", (
        (8, 8), (6, 7), (6, 6), (7, 8), (5, 6), (5, 6), (4, 5), (5, 5), (5, 6), (5, 6), (8, 8), (5, 6), (4, 5),
        (3, 4), (1, 2), (1, 2), (1, 1))),
    Property("SAD", "Surface admittance", "J m-2 s-1/2 K-1", (
        (1500, 1800), (1500, 2000), (1200, 1800), (1400, 1800), (1400, 2000), (1200, 1800), (800, 1500),
        (1200, 1800), (1000, 1800), (1000, 2500), (_NAN, _NAN), (1000, 1800), (700, 1500), (1200, 1600),
        (1200, 2500), (600, 1400), (1500, 1500))),
    Property("SAL", "Surface albedo", "1 (fraction 0–1)", (
        (0.10, 0.20), (0.10, 0.20), (0.10, 0.20), (0.12, 0.25), (0.12, 0.25), (0.12, 0.25), (0.15, 0.35),
        (0.15, 0.25), (0.12, 0.25), (0.12, 0.20), (0.10, 0.20), (0.15, 0.25), (0.15, 0.30), (0.15, 0.25),
        (0.15, 0.30), (0.20, 0.35), (0.02, 0.10))),
    Property("AHO", "Anthropogenic heat output", "W m-2", (
        (50, 300), (0, 75), (0, 75), (0, 50), (0, 25), (0, 25), (0, 35), (0, 50), (0, 10), (300, 300),
        (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0))),
)
CITATION = ("Stewart, I. D. and Oke, T. R. (2012): Local Climate Zones for urban temperature studies, "
            "Bull. Amer. Meteor. Soc. 93(12), 1879–1900, Tables 3 and 4")
#: Which value of each class's range a band holds.
STATISTICS = ("middle", "low", "high")
NODATA = -9999.0


def lookup(statistic: str = "middle") -> npt.NDArray[np.float32]:
    """float32 (len(PROPERTIES), 18) table: row p, column code (0 = no data → NODATA) → the ``statistic``
    ("low", "high" or "middle" = the mean of the two) of property p for that LCZ; NaN (unknown) → NODATA.

    Raises ValueError for an unknown statistic.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    ranges = np.array([p.ranges for p in PROPERTIES], dtype=np.float64)  # (P, 17, 2)
    values = {"low": ranges[..., 0], "high": ranges[..., 1], "middle": ranges.mean(axis=-1)}[statistic]
    table = np.concatenate([np.full((len(PROPERTIES), 1), np.nan), values], axis=1)
    return np.where(np.isnan(table), NODATA, table).astype(np.float32)


def parameter_bands(codes: npt.ArrayLike, statistic: str = "middle") -> npt.NDArray[np.float32]:
    """float32 (len(PROPERTIES), H, W) property values of an int (H, W) array of LCZ codes 0–17 (0 = no data,
    as ``legend.normalise_codes`` gives), NODATA where the code is 0 or the paper gives no value."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() > len(legend.CODES)):
        raise ValueError("codes must be LCZ codes 0–17 (normalise them with legend.normalise_codes first)")
    return lookup(statistic)[:, codes]


def write_parameter_raster(lcz_path: Path | str, out_path: Path | str, statistic: str = "middle") -> dict[int, int]:
    """Write ``out_path``: a float32 GeoTIFF on the LCZ map's grid (same size, geotransform and CRS), one band
    per property of PROPERTIES (description "<key>: <title> (<statistic>)", unit set), nodata NODATA, and its
    ``.qml`` (the STYLED_BAND on a sequential ramp); written atomically. Returns {code: cells} of the LCZ cells found.

    Raises ``lcz_raster.LCZMapError`` (a ValueError) when ``lcz_path`` is not an LCZ map (several bands,
    fractional values, values that are not LCZ codes 1–17 or 101–107) or holds no LCZ cell.
    """
    from osgeo import gdal

    from .lcz_raster import LCZMapError, read_lcz_map
    from .lcz_raster import write_ramp_style
    from ..runtime.outputs import atomic_output

    ds, codes = read_lcz_map(lcz_path)
    if not (codes != legend.NODATA).any():
        raise LCZMapError(f"The LCZ map {lcz_path} holds no LCZ cell (only no data); nothing to map.")
    bands = parameter_bands(codes, statistic)
    with atomic_output(out_path) as tmp:
        out = gdal.GetDriverByName("GTiff").Create(tmp, ds.RasterXSize, ds.RasterYSize, len(PROPERTIES),
                                                   gdal.GDT_Float32, options=["COMPRESS=DEFLATE", "TILED=YES",
                                                                              "INTERLEAVE=BAND"])
        out.SetGeoTransform(ds.GetGeoTransform())
        out.SetProjection(ds.GetProjection())
        out.SetMetadata({"source": CITATION, "statistic": statistic, "lcz_map": str(lcz_path)})
        for index, (prop, values) in enumerate(zip(PROPERTIES, bands), start=1):
            band = out.GetRasterBand(index)
            band.SetDescription(f"{prop.key}: {prop.title} ({statistic})")
            band.SetUnitType(prop.unit)
            band.SetNoDataValue(NODATA)
            band.WriteArray(values)
        out.FlushCache()
        out = None
    # QGIS opens it on the height band (the one a map of urban form usually shows), over the table's range.
    styled = next(i for i, prop in enumerate(PROPERTIES) if prop.key == STYLED_BAND)
    write_ramp_style(out_path, styled + 1, 0, np.nanmax(PROPERTIES[styled].ranges), PROPERTIES[styled].unit)
    present, counts = np.unique(codes[codes != legend.NODATA], return_counts=True)
    return {int(c): int(n) for c, n in zip(present, counts)}
