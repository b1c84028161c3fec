"""Seconds of the LCZ Generator's Gaussian filter (``df4lcz_plugin.lcz.lcz_filter.filter_lcz``) on a 1000 × 1000 map of
all 17 classes (random codes: every class present, the most work) at 10 m (kernels up to 101 cells wide) and at
100 m, and on the real WUDAPT map of Zaragoza (1210 × 765 cells of about 112 × 150 m, EPSG:4326).

Usage: ``python bench/bench_filter.py [--repeat 3]``. Prints a JSON report (the median of the runs).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from osgeo import gdal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from df4lcz_plugin.runtime import assets  # noqa: E402
from df4lcz_plugin.lcz import legend  # noqa: E402
from df4lcz_plugin.lcz.lcz_filter import filter_lcz, pixel_size_m  # noqa: E402


def seconds(codes, pixel_x, pixel_y, repeat):
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        filter_lcz(codes, pixel_x, pixel_y)
        runs.append(time.perf_counter() - start)
    return round(statistics.median(runs), 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    random = np.random.default_rng(0).integers(1, 18, (1000, 1000)).astype(np.uint8)
    zaragoza = gdal.Open(str(assets.fetch(assets.ZARAGOZA_LCZ)))
    size = (zaragoza.RasterXSize, zaragoza.RasterYSize)
    report = {
        "1000x1000_17_classes_10m_s": seconds(random, 10.0, 10.0, args.repeat),
        "1000x1000_17_classes_100m_s": seconds(random, 100.0, 100.0, args.repeat),
        "zaragoza_1210x765_s": seconds(legend.normalise_codes(zaragoza.ReadAsArray()),
                                       *pixel_size_m(zaragoza.GetGeoTransform(), zaragoza.GetProjection(), size),
                                       args.repeat),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
