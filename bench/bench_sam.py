"""Benchmark of the SAM step: MobileSAM (the default checkpoint) with the paper's AMG settings on real 320 m patches
of the Zürich orthophoto (SWISSIMAGE © swisstopo). Baseline in the same run: the paper-exact path, one patch at a
time (segment-anything's own generator). Against it:

- batched: ``MaskGenerator.many``, the image encoder batched over the patches and their crops (same masks?);
- fast SAM: bfloat16 autocast (share of the exact masks matched at IoU ≥ 0.5, both ways; max difference of the
  node features of matched masks);
- the image encoder alone with 1 and 2 threads (what AMG's 5 encoder passes per patch cost).

Usage: ``python bench/bench_sam.py [--device auto|cpu|cuda] [--patches N]``. Prints a JSON report.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _matched(a, b):
    """Share of the masks of ``a`` with a mask of ``b`` at IoU ≥ 0.5, and their pairs (i, j)."""
    if len(a) == 0:
        return 1.0, []
    flat_a, flat_b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    pairs = [(i, int(iou[i].argmax())) for i in range(len(a)) if len(b) and iou[i].max() >= 0.5]
    return len(pairs) / len(a), pairs


def _timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main():
    import torch

    from df4lcz_plugin import assets, sam
    from df4lcz_plugin.device import resolve_device
    from df4lcz_plugin.graph import build_graph
    from df4lcz_plugin.vhr import open_vhr, read_patch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--patches", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    source = open_vhr(assets.fetch(assets.ZURICH_ORTHO))
    gt = source.dataset.GetGeoTransform()
    wkt = source.dataset.GetProjection()
    # Footprints inside the 437.5 × 300 m image, shifted by 20 m each (coverage ≈ 94 %).
    footprints = [(gt[0] + 20 * i, gt[3] - 320, gt[0] + 20 * i + 320, gt[3]) for i in range(args.patches)]
    patches = [read_patch(source, f, wkt)[0] for f in footprints]
    model = sam.load_sam(assets.fetch_member(assets.MOBILE_SAM), device)
    exact_generator = sam.MaskGenerator(model)
    from segment_anything import SamAutomaticMaskGenerator

    library = SamAutomaticMaskGenerator(model, **exact_generator.settings)
    exact, exact_s = _timed(lambda: [exact_generator._filter(library.generate(p)) for p in patches])
    batched, batched_s = _timed(lambda: exact_generator.many(patches))
    fast, fast_s = _timed(lambda: [sam.MaskGenerator(model, fast=True)(p) for p in patches])
    both_ways, feature_diff = [], 0.0
    for rgb, e, f in zip(patches, exact, fast):
        share, pairs = _matched(e.masks, f.masks)
        back, _ = _matched(f.masks, e.masks)
        both_ways += [share, back]
        xe, xf = build_graph(rgb, e).x, build_graph(rgb, f).x
        feature_diff = max([feature_diff] + [float(np.abs(xe[i] - xf[j]).max()) for i, j in pairs])
    from segment_anything import SamPredictor

    encoder = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        predictor = SamPredictor(model)
        with torch.inference_mode():
            _, seconds = _timed(lambda: [predictor.set_image(p) for p in patches])
        encoder[f"{threads}_threads_patches_per_second"] = round(len(patches) / seconds, 3)
    hwm = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    report = {
        "device": str(device), "date": time.strftime("%Y-%m-%d"), "checkpoint": "MobileSAM vit_t",
        "settings": sam.PAPER_AMG_SETTINGS, "patches": len(patches), "masks_kept": [len(m) for m in exact],
        "exact_one_at_a_time_seconds_per_patch": round(exact_s / len(patches), 2),
        "batched_seconds_per_patch": round(batched_s / len(patches), 2),
        "speedup_batched_vs_exact": round(exact_s / batched_s, 2),
        "batched_masks_identical": all(np.array_equal(a.masks, b.masks) for a, b in zip(exact, batched)),
        "fast_sam_seconds_per_patch": round(fast_s / len(patches), 2),
        "speedup_fast_vs_exact": round(exact_s / fast_s, 2),
        "fast_masks_matched_iou_0.5_both_ways": round(min(both_ways), 3),
        "fast_max_node_feature_difference": round(feature_diff, 4),
        "encoder_only": encoder,
        "peak_rss_mb": round(int(hwm.group(1)) / 1024, 1),
    }
    if device.type == "cuda":
        report["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
