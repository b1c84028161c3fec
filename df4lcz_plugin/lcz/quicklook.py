"""A quicklook PNG of an LCZ map with its legend (matplotlib), beside a true-colour view of the Sentinel-2 input."""

from pathlib import Path

import numpy as np
from osgeo import gdal

from . import legend

gdal.UseExceptions()


def render_quicklook(lcz_path: Path | str, png_path: Path | str, sentinel2_path: Path | str | None = None,
                     palette_name: str = "official_2022", title: str = "LCZ map") -> Path | str:
    """Write ``png_path``: the LCZ map (codes 1–17, 0 transparent) with a legend of the classes present, and,
    if ``sentinel2_path`` (a 10-band So2Sat-order stack) is given, its B4/B3/B2 true colour over the same extent.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    lcz = gdal.Open(str(lcz_path))
    codes = lcz.ReadAsArray()
    gt = lcz.GetGeoTransform()
    extent = (gt[0], gt[0] + gt[1] * lcz.RasterXSize, gt[3] + gt[5] * lcz.RasterYSize, gt[3])
    colours = ["#00000000"] + list(legend.palette(palette_name))
    panels = 2 if sentinel2_path else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels + 3, 7), squeeze=False)
    if sentinel2_path:
        warped = gdal.Warp("", str(sentinel2_path), format="MEM", outputBounds=(extent[0], extent[2], extent[1], extent[3]),
                           xRes=abs(gt[1]) / 5, yRes=abs(gt[5]) / 5, resampleAlg="average")
        rgb = warped.ReadAsArray(band_list=[3, 2, 1]).astype(np.float32).transpose(1, 2, 0)
        axes[0, 0].imshow(np.clip(rgb / 2000.0, 0, 1), extent=extent)
        axes[0, 0].set_title("Sentinel-2 true colour (B4, B3, B2)")
    ax = axes[0, -1]
    ax.imshow(codes, cmap=ListedColormap(colours), vmin=0, vmax=17, interpolation="nearest", extent=extent)
    ax.set_title(title)
    present = [int(c) for c in np.unique(codes) if c != legend.NODATA]
    handles = [Patch(facecolor=legend.palette(palette_name)[c - 1], edgecolor="#333333", label=legend.label(c))
               for c in present]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=9)
    for axis in axes.ravel():
        axis.ticklabel_format(useOffset=False, style="plain")
        axis.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(str(png_path), dpi=110)
    plt.close(fig)
    return png_path
