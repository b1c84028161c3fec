"""docs/lcz_parameters.png: one urban canopy parameter band over the demo's LCZ map.

Usage: ``python scripts/figure_lcz_parameters.py [LCZ_MAP]`` (default ``demo_output/lcz.tif``, from
``scripts/demo.py``). The parameters come from the engine of ``df4lcz:lczparameters``.
"""

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from osgeo import gdal  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from df4lcz_plugin.lcz import legend  # noqa: E402
from df4lcz_plugin.lcz.lcz_parameters import NODATA, PROPERTIES, write_parameter_raster  # noqa: E402

BAND = "HRE"  # height of roughness elements


def main(lcz_path=ROOT / "demo_output" / "lcz.tif", png_path=ROOT / "docs" / "lcz_parameters.png"):
    lcz = gdal.Open(str(lcz_path))  # kept referenced: GDAL 3.6 crashes on chained temporaries
    codes = legend.normalise_codes(lcz.ReadAsArray())
    with tempfile.TemporaryDirectory() as folder:
        write_parameter_raster(lcz_path, Path(folder) / "ucp.tif")
        index = [p.key for p in PROPERTIES].index(BAND)
        ucp = gdal.Open(str(Path(folder) / "ucp.tif"))
        values = ucp.GetRasterBand(index + 1).ReadAsArray()
        ucp = None
    prop = PROPERTIES[index]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    colours = ["#ffffff"] + [c.lower() for c in legend.palette()]
    left.imshow(codes, cmap=ListedColormap(colours), norm=BoundaryNorm(np.arange(-0.5, 18), 18), interpolation="nearest")
    left.set_title(f"LCZ map ({Path(lcz_path).name})")
    present = [c for c in legend.CODES if (codes == c).any()]
    left.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in present],
                labels=[legend.label(c) for c in present], loc="lower left", fontsize=7)
    image = right.imshow(np.ma.masked_equal(values, NODATA), cmap="viridis", interpolation="nearest")
    right.set_title(f"{prop.title}, middle of the LCZ range ({prop.unit})")
    fig.colorbar(image, ax=right, shrink=0.8, label=prop.unit)
    for axis in (left, right):
        axis.set_axis_off()
    fig.suptitle("Urban canopy parameters from the LCZ map (Stewart & Oke 2012, Table 3)")
    fig.savefig(png_path, dpi=90)
    print(png_path)


if __name__ == "__main__":
    main(*sys.argv[1:2])
