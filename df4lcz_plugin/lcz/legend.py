"""The one LCZ legend: codes, names, colour palettes and the styles built from them.

Codes follow the global LCZ map convention (Demuzere et al. 2022, ESSD 14:3835): 1–10 are the built types
LCZ 1–10, 11–17 are the land-cover types LCZ A–G, and 0 is no data. So2Sat LCZ42 one-hot index k is code k+1.
Names follow Stewart & Oke (2012, BAMS 93:1879). Palettes: see ``shared/design/lcz_reference.md`` §2.
"""

from xml.sax.saxutils import quoteattr  # nosec B406

import numpy as np
import numpy.typing as npt

NODATA = 0
CODES = tuple(range(1, 18))
BUILT_CODES = tuple(range(1, 11))
NATURAL_CODES = tuple(range(11, 18))

LABELS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "A", "B", "C", "D", "E", "F", "G")
NAMES = (
    "Compact high-rise", "Compact mid-rise", "Compact low-rise", "Open high-rise", "Open mid-rise",
    "Open low-rise", "Lightweight low-rise", "Large low-rise", "Sparsely built", "Heavy industry",
    "Dense trees", "Scattered trees", "Bush, scrub", "Low plants", "Bare rock or paved",
    "Bare soil or sand", "Water",
)

#: Official palette of the 2022 global LCZ map GeoTIFF (also LCZ4r, LCZ4py). Default.
OFFICIAL_2022 = (
    "#910613", "#D9081C", "#FF0A22", "#C54F1E", "#FF6628", "#FF985E", "#FDED3F", "#BBBBBB", "#FFCBAB",
    "#565656", "#006A18", "#00A926", "#628432", "#B5DA7F", "#000000", "#FCF7B1", "#656BFA",
)
#: Classic WUDAPT palette (GEE catalog example, Demuzere's workflow configs).
CLASSIC_WUDAPT = (
    "#8C0000", "#D10000", "#FF0000", "#BF4D00", "#FF6600", "#FF9955", "#FAEE05", "#BCBCBC", "#FFCCAA",
    "#555555", "#006A00", "#00AA00", "#648525", "#B9DB79", "#000000", "#FBF7AE", "#6A6AFF",
)
PALETTES = {"official_2022": OFFICIAL_2022, "classic_wudapt": CLASSIC_WUDAPT}
PALETTE_TITLES = {"official_2022": "Official global LCZ map (2022)", "classic_wudapt": "Classic WUDAPT"}


def normalise_codes(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """int64 array of LCZ codes 0–17 from ``values`` (any integer array): 1–17 stay, the WUDAPT-2015 codes
    101–107 for LCZ A–G become 11–17, anything else becomes 0 (no data)."""
    values = np.asarray(values)
    codes = np.where((values >= 101) & (values <= 107), values - 90, values).astype(np.int64)
    return np.where(np.isin(codes, CODES), codes, NODATA)


def label(code: int) -> str:
    """Legend label of an LCZ code 1–17, e.g. ``"LCZ A: Dense trees"``.

    Raises ValueError for a code outside 1–17.
    """
    if code not in CODES:
        raise ValueError(f"LCZ code {code!r} is not in 1–17")
    return f"LCZ {LABELS[code - 1]}: {NAMES[code - 1]}"


def palette(name: str = "official_2022") -> tuple[str, ...]:
    """Colours of codes 1–17 as ``#RRGGBB`` strings (tuple of 17).

    Raises ValueError naming the known palettes when ``name`` is unknown.
    """
    try:
        return PALETTES[name]
    except KeyError:
        raise ValueError(f"unknown LCZ palette {name!r}; choose one of {sorted(PALETTES)}") from None


def rgb(hex_colour: str) -> tuple[int, ...]:
    """``"#RRGGBB"`` → (r, g, b) ints 0–255."""
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _style(renderer: str) -> str:
    """A QGIS raster layer style (QML text) around a ``<rasterrenderer>`` element."""
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" styleCategories="AllStyleCategories" hasScaleBasedVisibilityFlag="0">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
{renderer}
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


_MIN_MAX = """      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>"""


def qml(palette_name: str = "official_2022") -> str:
    """A QGIS layer style (QML text) with a paletted renderer on band 1 and 17 labelled LCZ classes.

    Value 0 is left out of the palette, so no-data cells stay transparent.
    """
    entries = "\n".join(
        f'        <paletteEntry value="{code}" color="{colour.lower()}" alpha="255" label={quoteattr(label(code))}/>'
        for code, colour in zip(CODES, palette(palette_name))
    )
    return _style(f"""    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
{_MIN_MAX}
      <colorPalette>
{entries}
      </colorPalette>
      <colorramp type="randomcolors" name="[source]"/>
    </rasterrenderer>""")


#: The confidence ramp (ColorBrewer YlGnBu, sequential): percent → colour.
CONFIDENCE_RAMP = ((0, "#ffffcc"), (25, "#a1dab4"), (50, "#41b6c4"), (75, "#2c7fb8"), (100, "#253494"))


def confidence_qml(band: int) -> str:
    """A QGIS layer style (QML text) for ``band``, a probability in percent (0–100): ``ramp_qml`` over 0–100 %."""
    return ramp_qml(band, 0, 100, "%")


def ramp_qml(band: int, minimum: float, maximum: float, unit: str) -> str:
    """A QGIS layer style (QML text): a pseudocolour renderer on ``band`` with the sequential CONFIDENCE_RAMP
    stretched over ``minimum``–``maximum`` (in the band's ``unit``, shown in the labels), interpolated; the nodata
    value stays transparent."""
    stops = [(minimum + (maximum - minimum) * f / 100, colour) for f, colour in CONFIDENCE_RAMP]
    items = "\n".join(f'          <item value="{value:g}" color="{colour}" alpha="255" label="{value:g} {unit}"/>'
                      for value, colour in stops)
    return _style(f"""    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" nodataColor=""
                    classificationMin="{minimum:g}" classificationMax="{maximum:g}">
{_MIN_MAX}
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="{minimum:g}"
                         maximumValue="{maximum:g}" labelPrecision="1">
{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>""")
