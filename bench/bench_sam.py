"""Benchmark of the SAM step: MobileSAM (the default checkpoint) with the paper's AMG settings on real
320 m patches of the Zürich orthophoto (SWISSIMAGE © swisstopo), in patches/s and peak RSS (and peak GPU
memory on CUDA). Baseline in the same run: the image encoder alone on the same patches (one pass per patch;
AMG's crop layer adds four more), so the ratio shows what the point prompts and mask decoding cost.

Usage: ``python bench/bench_sam.py [--device auto|cpu|cuda] [--patches N]``. Prints a JSON report.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    import torch

    from df4lcz_plugin import assets, sam
    from df4lcz_plugin.device import resolve_device
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
    generator = sam.MaskGenerator(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    counts = [len(generator(rgb)) for rgb in patches]
    amg_seconds = time.perf_counter() - started
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    started = time.perf_counter()
    with torch.inference_mode():
        for rgb in patches:
            predictor.set_image(rgb)
    encoder_seconds = time.perf_counter() - started
    report = {
        "device": str(device), "torch_threads": torch.get_num_threads(), "checkpoint": "MobileSAM vit_t",
        "settings": sam.PAPER_AMG_SETTINGS, "patches": len(patches), "masks_kept": counts,
        "amg_patches_per_second": round(len(patches) / amg_seconds, 4),
        "encoder_only_patches_per_second": round(len(patches) / encoder_seconds, 3),
        "amg_cost_vs_encoder_only": round(amg_seconds / encoder_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        report["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
