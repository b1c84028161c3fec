"""Train DF4LCZ models: on your own LCZ training areas, or on the paper's LCZC-GES2 dataset.

- ``train_on_training_areas``: the engine of ``df4lcz:trainmodel`` (samples and polygon splits in ``samples``,
  loops and recipes in ``training``).
- ``python -m df4lcz_plugin.train lczc-ges2 PATH --split random|polygons [--epochs N] [--device D]``: trains
  and evaluates both streams and the fusion on LCZC-GES2 as ctrlovefly/DF4LCZ does (``lczc_ges2``;
  ``shared/design/df4lcz_method.md`` §1, §3). Files: ``sen2_img_patches/sen2_image_{i}.npz`` with ``image``
  (32, 32, 10, used unscaled) and ``label`` (1–17); ``gg_nodes_refine/graph_{i}.npz`` with ``x`` (N, 5),
  ``a`` (N, N), ``y`` (17,) one-hot; ``patches_split/partition_random.npz`` / ``partition_polygons_1125.npz``,
  pickles (despite the name) of {'train', 'validation', 'test'} → index lists, read by ``read_split_file``.
  Prints JSON: the paper's columns (OA, OA_B and OA_N both as fusion.py computes them and over the 17 fixed
  labels, κ, weighted F1, per-class user's accuracy), the fusion at the paper's α = 0.6 first, then at the α
  chosen on validation; per split, the samples skipped for a missing file and those whose graph ``y``
  differs from the image ``label``; and warnings about classes missing from the training split.
"""

import argparse
import io
import json
import pickle  # nosec B403
import re
import sys
from pathlib import Path

import numpy as np

from .sentinel2.bands import SO2SAT_BANDS
from .feedback import Feedback
from .vhr.graph import DEFAULT_GRAPH_RULE, ObjectGraph, normalised_edges
from .legend import label as class_name
from .metrics import confusion_matrix, lcz_metrics, paper_oa_b_n
from .processing_level import card_level, stack_level, with_level
from .samples import SPLITS, class_weights, read_patches, sample_training_areas
from .training import PAPER_ALPHA, choose_alpha, gcn_probabilities, log_probabilities, train_gcn, train_sentinel2

SPLIT_FILES = {"random": "partition_random.npz", "polygons": "partition_polygons_1125.npz"}

try:  # NumPy >= 2 (its pickles name numpy._core)
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # NumPy 1 (its pickles name numpy.core)
    from numpy.core import multiarray as _multiarray, numeric as _numeric

#: The only globals a split pickle may name: NumPy's array, dtype and scalar constructors, under the module
#: names of NumPy 1 and NumPy >= 2. ``_frombuffer`` is how NumPy pickles an array under pickle protocol 5.
_SPLIT_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                  **{(f"{core}.{module}", name): constructor for core in ("numpy.core", "numpy._core")
                     for module, name, constructor in (("multiarray", "_reconstruct", _multiarray._reconstruct),
                                                       ("multiarray", "scalar", _multiarray.scalar),
                                                       ("numeric", "_frombuffer", _numeric._frombuffer))}}


class UnsafePickleError(ValueError):
    """A split file names a global other than NumPy's constructors, or holds other than integer index lists."""


class _SplitUnpickler(pickle.Unpickler):
    """Resolves only ``_SPLIT_GLOBALS``; builtins (dict, list, tuple, int, str) come from pickle opcodes and
    need no lookup. Anything else (os.system, builtins.eval, …) is refused before it can be called."""

    def find_class(self, module, name):
        if (module, name) in _SPLIT_GLOBALS:
            return _SPLIT_GLOBALS[module, name]
        raise UnsafePickleError(f"The split file refers to {module}.{name}; only NumPy arrays, dtypes and scalars "
                                "are allowed. It is not a DF4LCZ split file, or it was tampered with.")


def _indices(name, value):
    """A split's indices as Python ints, from a list/tuple of ints or NumPy integer scalars or a 1-D integer array."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise UnsafePickleError(f"The split file's '{name}' is a {value.ndim}-D array of {value.dtype}; only "
                                    "1-D integer arrays or lists of integers are allowed.")
        return value.tolist()
    if not isinstance(value, (list, tuple)):
        raise UnsafePickleError(f"The split file's '{name}' is a {type(value).__name__}, not a list of indices.")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise UnsafePickleError(f"The split file's '{name}' holds a {type(item).__name__}; only integer "
                                    "indices are allowed.")
    return [int(item) for item in value]


def read_split_file(path):
    """{'train': [int], 'validation': [int], 'test': [int]} from a DF4LCZ split pickle, read safely.

    Each split may be stored as a list of ints, a list of NumPy integer scalars or a 1-D integer ndarray (the
    authors read these files with plain ``pickle.load``). Raises UnsafePickleError for any other global or value.
    """
    data = _SplitUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    if not isinstance(data, dict) or not set(SPLITS) <= set(data):
        raise UnsafePickleError("The split file is not a dict with 'train', 'validation' and 'test' lists.")
    return {name: _indices(name, data[name]) for name in SPLITS}


def class_warnings(train_codes, test_codes):
    """Warnings (list of str) about training and test labels (LCZ codes 1–17) whose accuracy figures mislead:
    a single training class, a single test class, and classes with test samples but no training samples."""
    train, test = np.asarray(train_codes), np.asarray(test_codes)
    warnings = []
    if len(np.unique(train)) == 1:
        warnings.append(f"The training samples hold a single class ({class_name(int(train[0]))}): the model "
                        "cannot learn to tell classes apart, and the test figures say little.")
    if len(np.unique(test)) == 1:
        warnings.append(f"The test samples hold a single class ({class_name(int(test[0]))}): OA is only that "
                        "class's producer's accuracy, and kappa is 0 or undefined (NaN).")
    for code in sorted(set(test.tolist()) - set(train.tolist())):
        warnings.append(f"{class_name(code)} has {int((test == code).sum())} test sample(s) but no training "
                        "samples: the model was not trained on it here, so these samples will most likely count as errors.")
    return warnings


def _new_sentinel2_stream(base_model):
    """(module, stream card, recipe): Sen2LCZ-Net fine-tuned from ``base_model``, or a fresh 3D ResNet11.

    recipe: ``train_sentinel2``'s lr and step_size — from scratch the authors' (0.002, step 5); fine-tuning
    ours (2e-4, step 50; see ``training``).
    """
    from .models.registry import load_model
    from .models.resnet3d import ResNet11_3D

    if base_model is not None:
        base = load_model(base_model)
        return base.sentinel2, dict(base.card.stream("sentinel2")), {"lr": 2e-4, "step_size": 50}
    card = {"architecture": "resnet11_3d", "config": {}, "bands": list(SO2SAT_BANDS), "patch_size_px": 32,
            "pixel_size_m": 10, "input_scaling": {"divide_by": 10000.0}}
    return ResNet11_3D(), card, {"lr": 0.002, "step_size": 5}


def _probabilities(module, x, device):
    import torch

    module.eval()
    with torch.no_grad():
        return np.concatenate([log_probabilities(module, torch.as_tensor(x[i:i + 256]).to(device)).exp().cpu().numpy()
                               for i in range(0, len(x), 256)])


def train_on_training_areas(sentinel2_path, areas, model_path, report_path, base_model=None, vhr_path=None,
                            epochs=30, batch_size=64, device="cpu", seed=0, amg_settings=None, feedback=None,
                            segmentation="tiles"):
    """Train a DF4LCZ model on LCZ training areas and write it (safetensors + card) and an accuracy report.

    areas: ``training_areas.TrainingAreas``. base_model: a model card/weights path whose Sentinel-2 stream is
    fine-tuned (None: a 3D ResNet11 from scratch). vhr_path: VHR imagery to train the GCN stream as well.
    Warnings of ``class_warnings`` go to ``feedback.warning``, the card and the report's details. The card's
    Sentinel-2 stream records the stack's processing level (``processing_level.with_level``: a VRT mosaic's
    sources must agree), whatever the base model's was: the model is for stacks of that level.
    segmentation: ``tiles`` (shared segmentation, the default: footprints every 50 m overlap many times) or
    ``footprint`` (the paper's, one SAM run per sample); recorded in the card's graph rule (``vhr.stream``).
    Returns (model card path, test metrics dict). Raises SamplingError, Canceled, the VHR/SAM errors, and
    ModelError when the model's file name cannot be its id (``registry.MODEL_ID``: no commas).
    """
    from .models.registry import MODEL_ID, ModelError, save_model

    if not re.fullmatch(MODEL_ID, Path(model_path).stem):
        raise ModelError(f"The model's file name '{Path(model_path).stem}' is its id in Classify's MODEL list, so it "
                         "may hold letters, digits, '_', '-', '.' and spaces only (no commas); rename it.")
    feedback = feedback or Feedback()
    samples = sample_training_areas(sentinel2_path, areas, seed=seed, feedback=feedback)
    summary = samples.summary()
    feedback.info(f"Samples per split: { {k: sum(v['samples'].values()) for k, v in summary.items()} }, "
                  f"polygons: { {k: v['polygons'] for k, v in summary.items()} }")
    split = {name: samples.subset(name) for name in SPLITS}
    warnings = class_warnings(split["train"].codes, split["test"].codes)
    for text in warnings:
        feedback.warning(text)
    module, s2_card, recipe = _new_sentinel2_stream(base_model)
    level = stack_level(sentinel2_path)
    s2_card = with_level(s2_card, level)
    feedback.info(f"The training stack's Sentinel-2 processing level is {level}; the model card records "
                  f"{card_level(s2_card)}.")
    scale = float(s2_card["input_scaling"]["divide_by"])
    x = {name: read_patches(sentinel2_path, s, scale) for name, s in split.items()}
    y = {name: s.codes - 1 for name, s in split.items()}
    result = train_sentinel2(module, x["train"], y["train"], x["validation"], y["validation"], epochs=epochs,
                             batch_size=batch_size, weights=class_weights(split["train"].codes), device=device,
                             seed=seed, feedback=feedback, **recipe)
    p_s2 = {name: _probabilities(result.module, x[name], device) for name in ("validation", "test")}
    streams = {"sentinel2": s2_card}
    modules = {"sentinel2": result.module.cpu()}
    fusion, p_test = None, p_s2["test"]
    if vhr_path:
        gcn, vhr_card, alpha, p_test = _train_vhr(sentinel2_path, vhr_path, split, y, p_s2, epochs, device, seed,
                                                   amg_settings, feedback, segmentation)
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
                     "base_model": str(base_model) if base_model else None, "warnings": warnings,
                     "processing_level": level},
        "test_metrics": {k: metrics[k] for k in ("n", "OA", "OA_u", "OA_bu_wudapt", "OA_bu_binary", "OA_w", "kappa")},
        "licence": "as the training data",
    }
    card_path = save_model(Path(model_path).with_suffix(""), card, modules)
    details = {"model": str(card_path), "split protocol": card["training"]["protocol"], "seed": seed,
               "training samples": summary["train"], "validation samples": summary["validation"],
               "test samples": summary["test"], "best epoch": result.best_epoch,
               "canceled early": result.canceled, "fusion": json.dumps(fusion),
               "patches dropped under the cloud mask": samples.cloud_dropped}
    from .report import report_files, write_report

    _, csv_path, json_path, png_path = report_files(report_path)
    write_report(report_path, metrics, cm, f"Held-out test polygons — {card['title']}", details,
                 csv_path=csv_path, json_path=json_path, png_path=png_path, warnings=warnings)
    return card_path, metrics


def _train_vhr(sentinel2_path, vhr_path, split, y, p_s2, epochs, device, seed, amg_settings, feedback,
               segmentation):
    """Graphs of every sample's footprint, the GCN trained on them, α chosen on validation; test P fused."""
    from osgeo import gdal

    from . import assets
    from .grid import PATCH_PX, patch_footprint
    from .models.gcn import ObjectGCN
    from .vhr.sam import PAPER_AMG_SETTINGS
    from .vhr.stream import FootprintGraphs

    ds = gdal.Open(str(sentinel2_path))
    gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
    rule = {**DEFAULT_GRAPH_RULE, "segmentation": segmentation}
    footprints = FootprintGraphs(vhr_path, wkt, device, amg_settings=amg_settings, graph_rule=rule)  # cache, SAM
    graphs = {}
    for name, s in split.items():
        graphs[name] = []
        for r, c in zip(s.rows, s.cols):
            feedback.check_canceled()
            graph = footprints.graph(patch_footprint(gt, r - PATCH_PX // 2, c - PATCH_PX // 2))
            graphs[name].append(graph if graph is not None and graph.num_nodes else None)
    feedback.info(f"Object graphs ({segmentation} segmentation): {footprints.sam_runs} SAM run(s), "
                  f"{footprints.cache_hits} from the graph cache.")
    has = {name: np.array([g is not None for g in graphs[name]], bool) for name in graphs}
    if has["train"].sum() == 0 or has["validation"].sum() == 0:
        from .vhr.imagery import VHRError
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
    card = {"architecture": "object_gcn", "config": {}, "graph_rule": rule,
            "sam": {"architecture": "vit_t", "checkpoint_sha256": assets.MOBILE_SAM.sha256,
                    "amg": {**PAPER_AMG_SETTINGS, **(amg_settings or {})}}}
    return result.module, card, alpha, p_test


def _lczc_graph(npz):
    """ObjectGraph of an LCZC-GES2 graph file (``x`` (N, 5), ``a`` (N, N)) as the authors' loader reads it:
    A = (a > 0) as stored — a positive diagonal stays a self-loop, no symmetrisation — and Â = D^-1/2 A D^-1/2."""
    edge_index, edge_weight = normalised_edges(np.asarray(npz["a"]) > 0)
    return ObjectGraph(np.asarray(npz["x"], np.float32), edge_index, edge_weight)


def _read_lczc(root, indices):
    """The listed LCZC-GES2 samples that have both files, and how many were skipped for a missing file.

    Returns (images float32 (n, 10, 32, 32), image labels int64 (n,) 0-based, graphs [ObjectGraph],
    graph labels int64 (n,) = argmax of ``y``, skipped). Raises FileNotFoundError when none is left.
    """
    images, labels, graphs, graph_labels = [], [], [], []
    for index in indices:
        s2_path = root / "sen2_img_patches" / f"sen2_image_{index}.npz"
        graph_path = root / "gg_nodes_refine" / f"graph_{index}.npz"
        if not (s2_path.is_file() and graph_path.is_file()):
            continue  # skipped by both streams, so the i-th patch and the i-th graph stay one sample
        with np.load(s2_path, allow_pickle=False) as s2:
            images.append(np.asarray(s2["image"], np.float32).transpose(2, 0, 1))
            labels.append(int(s2["label"]) - 1)
        with np.load(graph_path, allow_pickle=False) as g:
            graphs.append(_lczc_graph(g))
            graph_labels.append(int(np.argmax(g["y"])))
    if not images:
        raise FileNotFoundError(f"None of the {len(indices)} listed samples has both sen2_img_patches/"
                                f"sen2_image_N.npz and gg_nodes_refine/graph_N.npz under {root}.")
    return np.stack(images), np.array(labels), graphs, np.array(graph_labels), len(indices) - len(images)


def lczc_ges2(root, split="random", epochs=100, device="cpu", seed=0, feedback=None, batch_size=64):
    """Train and evaluate the 3D ResNet11, the GCN and their fusion on LCZC-GES2 under one split protocol.

    As ctrlovefly/DF4LCZ: the 3D ResNet11 learns and is tested on the images' ``label``, the GCN on the graphs'
    own ``y``; the fusion is tested on ``y`` (fusion.py), at α = 0.6, then (our addition) at the α chosen on
    validation. Returns a dict, in this order: samples, skipped_missing, graph_y_differs_from_label (per split),
    warnings (list), reference_labels, alpha {paper, validation}, and results {ResNet11_3D, GCN,
    DF4LCZ_paper_alpha, DF4LCZ_validation_alpha} → ``lcz_metrics`` plus ``paper_oa_b_n`` of each.
    """
    from .models.gcn import ObjectGCN
    from .models.resnet3d import ResNet11_3D

    feedback = feedback or Feedback()
    root = Path(root)
    parts = read_split_file(root / "patches_split" / SPLIT_FILES[split])
    x, y, graphs, y_graph, skipped = {}, {}, {}, {}, {}
    for name in SPLITS:
        x[name], y[name], graphs[name], y_graph[name], skipped[name] = _read_lczc(root, parts[name])
        if skipped[name]:
            feedback.warning(f"{skipped[name]} listed {name} sample(s) lack sen2_image_N.npz or graph_N.npz and "
                             "are skipped by both streams.")
    warnings = [f"{what}: {text}" for what, labels in (("image labels", y), ("graph y", y_graph))
                for text in class_warnings(labels["train"] + 1, labels["test"] + 1)]
    for text in warnings:
        feedback.warning(text)
    s2 = train_sentinel2(ResNet11_3D(), x["train"], y["train"], x["validation"], y["validation"], epochs=epochs,
                         batch_size=batch_size, device=device, seed=seed, feedback=feedback).module
    gcn = train_gcn(ObjectGCN(), graphs["train"], y_graph["train"], graphs["validation"], y_graph["validation"],
                    epochs=epochs, device=device, seed=seed, feedback=feedback).module
    alpha = choose_alpha(_probabilities(s2, x["validation"], device),
                         gcn_probabilities(gcn, graphs["validation"], device), y_graph["validation"])
    p_s2, p_gcn = _probabilities(s2, x["test"], device), gcn_probabilities(gcn, graphs["test"], device)
    results = {}
    for name, p, truth in (("ResNet11_3D", p_s2, y["test"]), ("GCN", p_gcn, y_graph["test"]),
                           ("DF4LCZ_paper_alpha", PAPER_ALPHA * p_s2 + (1 - PAPER_ALPHA) * p_gcn, y_graph["test"]),
                           ("DF4LCZ_validation_alpha", alpha * p_s2 + (1 - alpha) * p_gcn, y_graph["test"])):
        cm = confusion_matrix(truth + 1, p.argmax(1) + 1)
        results[name] = {**lcz_metrics(cm), **paper_oa_b_n(cm)}
    return {"samples": {name: len(y[name]) for name in SPLITS}, "skipped_missing": skipped,
            "graph_y_differs_from_label": {name: int((y[name] != y_graph[name]).sum()) for name in SPLITS},
            "warnings": warnings,
            "reference_labels": {"ResNet11_3D": "image label", "GCN": "graph y", "DF4LCZ": "graph y (as fusion.py)"},
            "alpha": {"paper": PAPER_ALPHA, "validation": alpha}, "results": results}


def paper_columns(metrics):
    """The DF4LCZ paper's table columns from a ``lczc_ges2`` metrics dict: OA_B and OA_N both as fusion.py
    computes them (``*_paper``) and over the 17 fixed labels (``*_17_labels``); user's accuracy per LCZ 1–17."""
    return {"OA": metrics["OA"], "OA_B_paper": metrics["OA_B_paper"], "OA_N_paper": metrics["OA_N_paper"],
            "OA_B_17_labels": metrics["OA_B"], "OA_N_17_labels": metrics["OA_N"], "kappa": metrics["kappa"],
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

    out = lczc_ges2(args.path, args.split, args.epochs, resolve_device(args.device), args.seed,
                    batch_size=args.batch_size)
    out["results"] = {name: paper_columns(m) for name, m in out["results"].items()}
    from .report import json_safe

    print(json.dumps(json_safe({"split": args.split, **out}), indent=2))


if __name__ == "__main__":
    sys.exit(main())
