"""Train DF4LCZ models: on your own LCZ training areas, or on the paper's LCZC-GES2 dataset.

- ``train_on_training_areas``: the engine of ``df4lcz:trainmodel`` (samples and polygon splits in ``samples``,
  loops and recipes in ``training``).
- ``python -m df4lcz_plugin.train lczc-ges2 PATH --split random|polygons [--epochs N] [--device D]``: trains
  and evaluates both streams and the fusion on LCZC-GES2 (``shared/design/df4lcz_method.md`` §1, §3: folders
  ``sen2_img_patches/sen2_image_{i}.npz`` with ``image`` (32, 32, 10) and ``label`` (1–17),
  ``gg_nodes_refine/graph_{i}.npz`` with ``x`` (N, 5), ``a`` (N, N), ``y`` (17,) one-hot, and
  ``patches_split/partition_random.npz`` / ``partition_polygons_1125.npz``, pickled dicts of index lists read
  through a restricted unpickler). Prints the paper's columns: OA, OA_B, OA_N, κ, weighted F1 and per-class
  user's accuracy, over the 17 fixed labels.
"""

import argparse
import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from .bands import SO2SAT_BANDS
from .feedback import Feedback
from .graph import DEFAULT_GRAPH_RULE, ObjectGraph, normalised_edges
from .metrics import confusion_matrix, lcz_metrics
from .samples import class_weights, read_patches, sample_training_areas
from .training import PAPER_ALPHA, choose_alpha, gcn_probabilities, log_probabilities, train_gcn, train_sentinel2

SPLIT_FILES = {"random": "partition_random.npz", "polygons": "partition_polygons_1125.npz"}


class UnsafePickleError(ValueError):
    """A split file holds something other than dicts, lists, ints and strings."""


class _SplitUnpickler(pickle.Unpickler):
    """Admits only dict, list, int and str: no class is ever looked up, so no code can run."""

    def find_class(self, module, name):
        raise UnsafePickleError(f"The split file refers to {module}.{name}; only dict, list, int and str are "
                                "allowed. It is not a DF4LCZ split file, or it was tampered with.")


def read_split_file(path):
    """{'train': [...], 'validation': [...], 'test': [...]} from a DF4LCZ split pickle, read safely.

    Raises UnsafePickleError for any class reference or any value other than dict/list/int/str.
    """
    data = _SplitUnpickler(io.BytesIO(Path(path).read_bytes())).load()

    def check(value):
        if isinstance(value, dict):
            for key, item in value.items():
                check(key)
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        elif not isinstance(value, (int, str)) or isinstance(value, bool):
            raise UnsafePickleError(f"The split file holds a {type(value).__name__}; only dict, list, int and str "
                                    "are allowed.")

    check(data)
    if not isinstance(data, dict) or not {"train", "validation", "test"} <= set(data):
        raise UnsafePickleError("The split file is not a dict with 'train', 'validation' and 'test' lists.")
    return data


def _new_sentinel2_stream(base_model):
    """(module, stream card, learning rate): Sen2LCZ-Net fine-tuned from ``base_model``, or a fresh 3D ResNet11."""
    from .models.registry import load_model
    from .models.resnet3d import ResNet11_3D

    if base_model is not None:
        base = load_model(base_model)
        return base.sentinel2, dict(base.card.stream("sentinel2")), 2e-4
    card = {"architecture": "resnet11_3d", "config": {}, "bands": list(SO2SAT_BANDS), "patch_size_px": 32,
            "pixel_size_m": 10, "input_scaling": {"divide_by": 10000.0}}
    return ResNet11_3D(), card, 0.002


def _probabilities(module, x, device):
    import torch

    module.eval()
    with torch.no_grad():
        return np.concatenate([log_probabilities(module, torch.as_tensor(x[i:i + 256]).to(device)).exp().cpu().numpy()
                               for i in range(0, len(x), 256)])


def train_on_training_areas(sentinel2_path, areas, model_path, report_path, base_model=None, vhr_path=None,
                            epochs=30, batch_size=64, device="cpu", seed=0, amg_settings=None, feedback=None):
    """Train a DF4LCZ model on LCZ training areas and write it (safetensors + card) and an accuracy report.

    areas: ``training_areas.TrainingAreas``. base_model: a model card/weights path whose Sentinel-2 stream is
    fine-tuned (None: a 3D ResNet11 from scratch). vhr_path: VHR imagery to train the GCN stream as well.
    Returns (model card path, test metrics dict). Raises SamplingError, Canceled, and the VHR/SAM errors.
    """
    from .models.registry import save_model

    feedback = feedback or Feedback()
    samples = sample_training_areas(sentinel2_path, areas, seed=seed, feedback=feedback)
    summary = samples.summary()
    feedback.info(f"Samples per split: { {k: sum(v['samples'].values()) for k, v in summary.items()} }, "
                  f"polygons: { {k: v['polygons'] for k, v in summary.items()} }")
    split = {name: samples.subset(name) for name in ("train", "validation", "test")}
    module, s2_card, lr = _new_sentinel2_stream(base_model)
    scale = float(s2_card["input_scaling"]["divide_by"])
    x = {name: read_patches(sentinel2_path, s, scale) for name, s in split.items()}
    y = {name: s.codes - 1 for name, s in split.items()}
    result = train_sentinel2(module, x["train"], y["train"], x["validation"], y["validation"], epochs=epochs,
                             batch_size=batch_size, lr=lr, weights=class_weights(split["train"].codes),
                             device=device, seed=seed, feedback=feedback)
    p_s2 = {name: _probabilities(result.module, x[name], device) for name in ("validation", "test")}
    streams = {"sentinel2": s2_card}
    modules = {"sentinel2": result.module.cpu()}
    fusion, p_test = None, p_s2["test"]
    if vhr_path:
        gcn, vhr_card, alpha, p_test = _train_vhr(sentinel2_path, vhr_path, split, y, p_s2, epochs, device, seed,
                                                   amg_settings, feedback)
        streams["vhr"] = vhr_card
        modules["vhr"] = gcn.cpu()
        fusion = {"alpha": alpha}
    cm = confusion_matrix(split["test"].codes, p_test.argmax(1) + 1)
    metrics = lcz_metrics(cm)
    card = {
        "id": Path(model_path).stem,
        "title": f"DF4LCZ trained on {len(areas)} training areas ({'fine-tuned Sen2LCZ-Net' if base_model else '3D ResNet11'}"
                 f"{' + GCN' if vhr_path else ''})",
        "streams": streams,
        "fusion": fusion,
        "classes": list(range(1, 18)),
        "training": {"sentinel2": str(sentinel2_path), "vhr": str(vhr_path) if vhr_path else None,
                     "protocol": "split by polygon (polygon pool), 20 % test, 20 % validation per class",
                     "seed": seed, "epochs": epochs, "batch_size": batch_size, "best_epoch": result.best_epoch,
                     "canceled": result.canceled, "samples": summary, "history": result.history,
                     "base_model": str(base_model) if base_model else None},
        "test_metrics": {k: metrics[k] for k in ("n", "OA", "OA_u", "OA_bu_wudapt", "OA_bu_binary", "OA_w", "kappa")},
        "licence": "as the training data",
    }
    card_path = save_model(Path(model_path).with_suffix(""), card, modules)
    details = {"model": str(card_path), "split protocol": card["training"]["protocol"], "seed": seed,
               "training samples": summary["train"], "validation samples": summary["validation"],
               "test samples": summary["test"], "best epoch": result.best_epoch,
               "canceled early": result.canceled, "fusion": json.dumps(fusion)}
    from .report import write_report

    base = Path(report_path)
    write_report(report_path, metrics, cm, f"Held-out test polygons — {card['title']}", details,
                 csv_path=base.with_suffix(".csv"), json_path=base.with_suffix(".json"),
                 png_path=base.with_suffix(".png"))
    return card_path, metrics


def _train_vhr(sentinel2_path, vhr_path, split, y, p_s2, epochs, device, seed, amg_settings, feedback):
    """Graphs of every sample's footprint, the GCN trained on them, α chosen on validation; test P fused."""
    from osgeo import gdal

    from . import assets
    from .graph import build_graph
    from .grid import PATCH_PX, patch_footprint
    from .models.gcn import ObjectGCN
    from .sam import PAPER_AMG_SETTINGS, MaskGenerator, load_sam
    from .vhr import MIN_COVERAGE, open_vhr, read_patch

    ds = gdal.Open(str(sentinel2_path))
    gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
    source = open_vhr(vhr_path)
    checkpoint = assets.fetch_member(assets.MOBILE_SAM)
    generator = MaskGenerator(load_sam(checkpoint, device), **(amg_settings or {}))
    graphs = {}
    for name, s in split.items():
        graphs[name] = []
        for r, c in zip(s.rows, s.cols):
            feedback.check_canceled()
            footprint = patch_footprint(gt, r - PATCH_PX // 2, c - PATCH_PX // 2)
            rgb, coverage = read_patch(source, footprint, wkt)
            graph = build_graph(rgb, generator(rgb)) if coverage >= MIN_COVERAGE else None
            graphs[name].append(graph if graph is not None and graph.num_nodes else None)
    has = {name: np.array([g is not None for g in graphs[name]], bool) for name in graphs}
    if has["train"].sum() == 0 or has["validation"].sum() == 0:
        from .vhr import VHRError
        raise VHRError("The VHR imagery covers no training or no validation sample footprint; the GCN stream "
                       "cannot be trained. Leave VHR empty to train the Sentinel-2 stream only.")
    pick = lambda name: [g for g in graphs[name] if g is not None]  # noqa: E731
    result = train_gcn(ObjectGCN(), pick("train"), y["train"][has["train"]], pick("validation"),
                       y["validation"][has["validation"]], epochs=epochs, device=device, seed=seed, feedback=feedback)
    p_val_vhr = gcn_probabilities(result.module, pick("validation"), device)
    alpha = choose_alpha(p_s2["validation"][has["validation"]], p_val_vhr, y["validation"][has["validation"]])
    feedback.info(f"Fusion weight chosen on validation: alpha = {alpha}")
    p_test = p_s2["test"].copy()
    if has["test"].any():
        p_test[has["test"]] = alpha * p_test[has["test"]] + (1 - alpha) * gcn_probabilities(
            result.module, pick("test"), device)
    card = {"architecture": "object_gcn", "config": {}, "graph_rule": DEFAULT_GRAPH_RULE,
            "sam": {"architecture": "vit_t", "checkpoint_sha256": assets.MOBILE_SAM.sha256,
                    "amg": {**PAPER_AMG_SETTINGS, **(amg_settings or {})}}}
    return result.module, card, alpha, p_test


def _lczc_graph(npz):
    a = np.asarray(npz["a"]) > 0  # binarised as the paper's loader does
    np.fill_diagonal(a, False)
    edge_index, edge_weight = normalised_edges(a)
    return ObjectGraph(np.asarray(npz["x"], np.float32), edge_index, edge_weight)


def lczc_ges2(root, split="random", epochs=100, device="cpu", seed=0, feedback=None, batch_size=64):
    """Train and evaluate the 3D ResNet11, the GCN and their fusion on LCZC-GES2 under one split protocol.

    Returns {"ResNet11_3D": metrics, "GCN": metrics, "DF4LCZ": metrics, "alpha": α} (metrics over 17 labels).
    """
    from .models.gcn import ObjectGCN
    from .models.resnet3d import ResNet11_3D

    root = Path(root)
    parts = read_split_file(root / "patches_split" / SPLIT_FILES[split])
    data = {}
    for name in ("train", "validation", "test"):
        images, labels, graphs = [], [], []
        for index in parts[name]:
            with np.load(root / "sen2_img_patches" / f"sen2_image_{index}.npz", allow_pickle=False) as s2:
                images.append(np.asarray(s2["image"], np.float32).transpose(2, 0, 1))
                labels.append(int(s2["label"]) - 1)
            with np.load(root / "gg_nodes_refine" / f"graph_{index}.npz", allow_pickle=False) as g:
                graphs.append(_lczc_graph(g))
        data[name] = (np.stack(images), np.array(labels), graphs)
    x_tr, y_tr, g_tr = data["train"]
    x_va, y_va, g_va = data["validation"]
    x_te, y_te, g_te = data["test"]
    s2 = train_sentinel2(ResNet11_3D(), x_tr, y_tr, x_va, y_va, epochs=epochs, batch_size=batch_size,
                         device=device, seed=seed, feedback=feedback).module
    gcn = train_gcn(ObjectGCN(), g_tr, y_tr, g_va, y_va, epochs=epochs, device=device, seed=seed,
                    feedback=feedback).module
    alpha = choose_alpha(_probabilities(s2, x_va, device), gcn_probabilities(gcn, g_va, device), y_va)
    p_s2, p_gcn = _probabilities(s2, x_te, device), gcn_probabilities(gcn, g_te, device)
    results = {"alpha": alpha, "paper_alpha": PAPER_ALPHA}
    for name, p in (("ResNet11_3D", p_s2), ("GCN", p_gcn), ("DF4LCZ", alpha * p_s2 + (1 - alpha) * p_gcn),
                    ("DF4LCZ_alpha_0.6", PAPER_ALPHA * p_s2 + (1 - PAPER_ALPHA) * p_gcn)):
        results[name] = lcz_metrics(confusion_matrix(y_te + 1, p.argmax(1) + 1))
    return results


def paper_columns(metrics):
    """The DF4LCZ paper's table columns from a metrics dict (user's accuracy per class, 17 fixed labels)."""
    return {"OA": metrics["OA"], "OA_B": metrics["OA_B"], "OA_N": metrics["OA_N"], "kappa": metrics["kappa"],
            "weighted_F1": metrics["weighted_F1"], "user_accuracy": metrics["user_accuracy"]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m df4lcz_plugin.train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lczc = sub.add_parser("lczc-ges2", help="train and evaluate on the DF4LCZ paper's LCZC-GES2 dataset")
    lczc.add_argument("path", help="the dataset root (sen2_img_patches/, gg_nodes_refine/, patches_split/)")
    lczc.add_argument("--split", choices=sorted(SPLIT_FILES), default="random")
    lczc.add_argument("--epochs", type=int, default=100)
    lczc.add_argument("--device", default="auto")
    lczc.add_argument("--seed", type=int, default=0)
    lczc.add_argument("--batch-size", type=int, default=64, help="Sentinel-2 stream batch (paper: 64)")
    args = parser.parse_args(argv)
    from .device import resolve_device

    results = lczc_ges2(args.path, args.split, args.epochs, resolve_device(args.device), args.seed,
                        batch_size=args.batch_size)
    table = {name: paper_columns(m) for name, m in results.items() if isinstance(m, dict)}
    from .report import json_safe

    print(json.dumps(json_safe({"split": args.split, "alpha": results["alpha"], "results": table}), indent=2))


if __name__ == "__main__":
    sys.exit(main())
