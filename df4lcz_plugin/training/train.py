"""Train DF4LCZ models: on your own LCZ training areas, or on the paper's LCZC-GES2 dataset.

- ``train_on_training_areas``: the engine of ``df4lcz:trainmodel``: the LCZ Generator's bootstraps, then the
  final model (samples and polygon splits in ``samples``, the bootstrap protocol in ``bootstrap``, loops and
  recipes in ``training``).
- ``python -m df4lcz_plugin.training.train lczc-ges2 PATH --split random|polygons [--epochs N] [--device D]``: trains
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
import contextlib
import io
import json
import os
import pickle  # nosec B403
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence, Union, cast

import numpy as np
import numpy.typing as npt

from ..sentinel2.bands import SO2SAT_BANDS
from .bootstrap import (DEFAULT_BOOTSTRAPS, TRAIN_SHARE, BootstrapLog, Record, areas_digest, bootstrap_seed,
                        cap_polygons, check_bootstraps, check_ensemble, held_out_counts, out_of_fold, run_key,
                        summarise)
from .members import EnsembleMembers
from ..runtime.feedback import Canceled, Feedback, StageFeedback, duration_text
from ..runtime.kill_points import kill_point
from .report import report_files
from .training_areas import TrainingAreas
from ..vhr.graph import DEFAULT_GRAPH_RULE, ObjectGraph, normalised_edges
from ..lcz.legend import label as class_name
from .metrics import confusion_matrix, lcz_metrics, paper_oa_b_n
from ..sentinel2.processing_level import card_level, stack_level, with_level
from .samples import SPLITS, Samples, class_weights, read_patches, sample_training_areas, split_polygons
from .loops import PAPER_ALPHA, choose_alpha, gcn_probabilities, log_probabilities, train_gcn, train_sentinel2

SPLIT_FILES = {"random": "partition_random.npz", "polygons": "partition_polygons_1125.npz"}
CLASSES = list(range(1, 18))
LICENCE = "as the training data"

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

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SPLIT_GLOBALS:
            return _SPLIT_GLOBALS[module, name]
        raise UnsafePickleError(f"The split file refers to {module}.{name}; only NumPy arrays, dtypes and scalars "
                                "are allowed. It is not a DF4LCZ split file, or it was tampered with.")


def _indices(name: str, value: object) -> list[int]:
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


def read_split_file(path: Union[str, Path]) -> dict[str, list[int]]:
    """{'train': [int], 'validation': [int], 'test': [int]} from a DF4LCZ split pickle, read safely.

    Each split may be stored as a list of ints, a list of NumPy integer scalars or a 1-D integer ndarray (the
    authors read these files with plain ``pickle.load``). Raises UnsafePickleError for any other global or value.
    """
    data = _SplitUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    if not isinstance(data, dict) or not set(SPLITS) <= set(data):
        raise UnsafePickleError("The split file is not a dict with 'train', 'validation' and 'test' lists.")
    return {name: _indices(name, data[name]) for name in SPLITS}


def class_warnings(train_codes: npt.ArrayLike, test_codes: npt.ArrayLike) -> list[str]:
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
                        "samples: the model was not trained on it here, so these samples will most likely count as "
                        "errors.")
    return warnings


def _new_sentinel2_stream(base_model: Optional[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(module, stream card, recipe): Sen2LCZ-Net fine-tuned from ``base_model``, or a fresh 3D ResNet11.

    recipe: ``train_sentinel2``'s lr and step_size — from scratch the authors' (0.002, step 5); fine-tuning
    ours (2e-4, step 50; see ``training``).
    """
    from ..models.registry import load_model
    from ..models.resnet3d import ResNet11_3D

    if base_model is not None:
        base = load_model(base_model)
        return base.sentinel2, dict(base.card.stream("sentinel2")), {"lr": 2e-4, "step_size": 50}
    card = {"architecture": "resnet11_3d", "config": {}, "bands": list(SO2SAT_BANDS), "patch_size_px": 32,
            "pixel_size_m": 10, "input_scaling": {"divide_by": 10000.0}}
    return ResNet11_3D(), card, {"lr": 0.002, "step_size": 5}


def _probabilities(module: Any, x: npt.NDArray[np.float32], device: Any) -> npt.NDArray[np.float32]:
    import torch

    module.eval()
    with torch.no_grad():
        return np.concatenate([log_probabilities(module, torch.as_tensor(x[i:i + 256]).to(device)).exp().cpu().numpy()
                               for i in range(0, len(x), 256)])


PROTOCOL = ("LCZ Generator bootstraps: per bootstrap, per class, 30 % of the polygons (≥ 1) held out for the "
            "test and 70 % for training, of which 20 % (≥ 1) validate (early stop, best epoch, α); polygons of "
            "0.3 km² or more replaced by the 300 m buffer around their centroid. Final model: all polygons, 20 % "
            "(≥ 1) per class validating.")


@dataclass
class _Setup:
    """What every training of a run shares: all samples' patches (float32 (N, 10, 32, 32)), their 0-based labels
    (int64 (N,)), their object graphs (None without VHR) and the recipe."""

    x: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    graphs: Optional[list[Optional[ObjectGraph]]]
    base_model: Optional[str]
    epochs: int
    batch_size: int
    device: str


@dataclass
class _Fitted:
    """A trained model: the Sentinel-2 stream's TrainingResult, the GCN's (or None), α and the test
    probabilities (float32 (n_test, 17), None without test samples)."""

    s2: Any
    gcn: Any = None
    alpha: Optional[float] = None
    p_test: Any = None  # float32 (n_test, 17) or None


class _Recorded(StageFeedback):
    """The run's feedback, its warnings kept for the card and the report."""

    def __init__(self, run: Feedback) -> None:
        super().__init__(run, 0, 1)
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        super().warning(text)


def train_on_training_areas(sentinel2_path: str, areas: TrainingAreas, model_path: Union[str, Path],
                            report_path: str, base_model: Optional[str] = None, vhr_path: Optional[str] = None,
                            epochs: int = 30, batch_size: int = 64, device: str = "cpu", seed: int = 0,
                            amg_settings: Optional[dict[str, Any]] = None, feedback: Optional[Feedback] = None,
                            segmentation: str = "tiles", bootstraps: int = DEFAULT_BOOTSTRAPS,
                            ensemble: bool = False) -> tuple[Path, Optional[dict[str, Any]], list[dict[str, Any]]]:
    """Assess by bootstraps as the LCZ Generator does, then train a DF4LCZ model on all the LCZ training areas;
    write it (safetensors + card) and the accuracy report.

    areas: ``training_areas.TrainingAreas``. base_model: a model card/weights path whose Sentinel-2 stream is
    fine-tuned (None: a 3D ResNet11 from scratch). vhr_path: VHR imagery to train the GCN stream as well (each
    sample's graph made once, through the graph cache). bootstraps: 1–100 (``PROTOCOL``; ``bootstrap``); each
    finished one is kept in the report's ``.bootstraps.jsonl``, from which a re-run of the same training resumes.
    The card's Sentinel-2 stream records the stack's processing level (``processing_level.with_level``), and the
    card the bootstrap figures. segmentation: ``tiles`` (shared segmentation, the default) or ``footprint`` (the
    paper's, one SAM run per sample); recorded in the card's graph rule (``vhr.stream``).
    ensemble: keep each bootstrap's model as a member model (``members.EnsembleMembers``, in
    ``<model>.members/``), listed in the final model's card (``registry.ensemble_entry``): classifying with the
    model then averages the final model's Sentinel-2 probabilities and the members' (``backends.EnsembleRunner``).
    Returns (model card path, ``bootstrap.summarise`` dict, ``bootstrap.out_of_fold`` list, one per polygon of
    ``areas``). Raises ValueError for BOOTSTRAPS out of range or ENSEMBLE with fewer than 2, SamplingError, the
    VHR/SAM errors, ModelError when the model's file name cannot be its id (``registry.MODEL_ID``: no commas), and
    Canceled (after writing the report of the bootstraps finished, if any, when no model could be trained).
    """
    from ..models.registry import MODEL_ID, ModelError

    if not re.fullmatch(MODEL_ID, Path(model_path).stem):
        raise ModelError(f"The model's file name '{Path(model_path).stem}' is its id in Classify's MODEL list, so it "
                         "may hold letters, digits, '_', '-', '.' and spaces only (no commas); rename it.")
    check_bootstraps(bootstraps)
    check_ensemble(bootstraps, ensemble)
    feedback = _Recorded(feedback or Feedback())
    geometries, capped = cap_polygons(areas.geometries, areas.srs)
    if capped:
        feedback.info(f"{len(capped)} training polygon(s) of 0.3 km² or more replaced by the 300 m buffer around "
                      "their centroid, as the LCZ Generator does, so that large polygons do not dominate.")
    samples = sample_training_areas(sentinel2_path, TrainingAreas(geometries, areas.codes, areas.srs),
                                    feedback=feedback)
    _, s2_card, _ = _new_sentinel2_stream(base_model)
    level = stack_level(sentinel2_path)
    s2_card = with_level(s2_card, level)
    feedback.info(f"The training stack's Sentinel-2 processing level is {level}; the model card records "
                  f"{card_level(s2_card)}.")
    setup = _Setup(read_patches(sentinel2_path, samples, float(s2_card["input_scaling"]["divide_by"])),
                   samples.codes - 1, None, base_model, epochs, batch_size, device)
    streams = {"sentinel2": s2_card}
    if vhr_path:
        setup.graphs, streams["vhr"] = _sample_graphs(sentinel2_path, vhr_path, samples, device, amg_settings,
                                                      feedback, segmentation)
    key = run_key(stack=sentinel2_path, stack_stat=_stat(sentinel2_path), areas=areas_digest(areas), vhr=vhr_path,
                  base_model=base_model, epochs=epochs, batch_size=batch_size, seed=seed, amg=amg_settings,
                  segmentation=segmentation)
    log = BootstrapLog(report_files(report_path)[-1], key)
    title = (f"DF4LCZ trained on {len(areas)} training areas "
             f"({'fine-tuned Sen2LCZ-Net' if base_model else '3D ResNet11'}{' + GCN' if vhr_path else ''})")
    members = EnsembleMembers(model_path, {"title": title, "streams": {"sentinel2": s2_card}, "classes": CLASSES,
                                           "licence": LICENCE}, bootstraps) if ensemble else None
    records = _run_bootstraps(setup, samples, log, bootstraps, seed, feedback, members)
    summary = summarise(records) if records else None
    oof = out_of_fold(records, areas.codes)
    split = split_polygons(samples.polygons, samples.codes, np.random.default_rng(bootstrap_seed(seed, None)),
                           test_share=0)
    fitted = None
    if len(records) == bootstraps:
        with contextlib.suppress(Canceled):
            fitted = _fit(setup, split, bootstrap_seed(seed, None),
                          StageFeedback(feedback, bootstraps, bootstraps + 1, "Final model: "))
    report = {"path": report_path, "summary": summary, "oof": oof, "areas": areas, "requested": bootstraps,
              "warnings": feedback.warnings, "capped": len(capped)}
    if fitted is None:
        _canceled(report, log)
    modules = {"sentinel2": fitted.s2.module.cpu(), **({"vhr": fitted.gcn.module.cpu()} if fitted.gcn else {})}
    card: dict[str, Any] = {
        "id": Path(model_path).stem, "title": title, "streams": streams,
        "fusion": {"alpha": fitted.alpha} if fitted.gcn else None, "classes": CLASSES,
        "training": {"sentinel2": str(sentinel2_path), "vhr": str(vhr_path) if vhr_path else None,
                     "protocol": PROTOCOL, "seed": seed, "epochs": epochs, "batch_size": batch_size,
                     "best_epoch": fitted.s2.best_epoch, "canceled": fitted.s2.canceled,
                     "samples": samples.summary(split), "history": fitted.s2.history,
                     "base_model": str(base_model) if base_model else None, "warnings": feedback.warnings,
                     "processing_level": level, "capped_polygons": len(capped)},
        "bootstrap_metrics": _card_figures(cast(dict[str, Any], summary), bootstraps),  # all bootstraps done
        "licence": LICENCE,
    }
    from ..models.registry import save_model

    ensemble_card, ensemble_report = _ensemble_outputs(members, model_path)
    card.update(ensemble_card)

    card_path = save_model(Path(model_path).with_suffix(""), card, modules)
    _write_report(report, {"model": str(card_path), "title": title, "final model samples": card["training"]["samples"],
                           "final model best epoch": fitted.s2.best_epoch,
                           "final model canceled early": fitted.s2.canceled, "fusion": json.dumps(card["fusion"]),
                           "patches dropped under the cloud mask": samples.cloud_dropped, **ensemble_report})
    return card_path, summary, oof


def _ensemble_outputs(members: Optional[EnsembleMembers],
                      model_path: Union[str, Path]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the final model card's ``ensemble`` field, the report's line about the members) of an ENSEMBLE run; both
    empty without ``members``."""
    from ..models.registry import ensemble_entry

    if members is None:
        return {}, {}
    return ({"ensemble": ensemble_entry(model_path, members.paths())},
            {"ensemble members": f"{members.bootstraps} bootstrap models in {members.folder}, their probabilities "
                                 "averaged with the final model's"})


def _stat(path: str) -> Optional[tuple[int, int]]:
    """(size, mtime) of a file, None for a non-file source (e.g. a GDAL connection string)."""
    try:
        stat = os.stat(path)
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return None


def _card_figures(summary: dict[str, Any], requested: int) -> dict[str, Any]:
    """The bootstrap figures the model card records."""
    return {"protocol": PROTOCOL, "bootstraps": summary["bootstraps"], "requested": requested,
            **{part: summary[part] for part in ("median", "q1", "q3", "iqr")},
            "F1": summary["F1"]}


def _write_report(report: dict[str, Any], details: dict[str, Any]) -> None:
    from .report import write_bootstrap_report

    write_bootstrap_report(report["path"], report["summary"], report["requested"], report["areas"], report["oof"],
                           details={"split protocol": PROTOCOL,
                                    "polygons capped (≥ 0.3 km² → 300 m buffer)": report["capped"], **details},
                           warnings=report["warnings"])


def _canceled(report: dict[str, Any], log: BootstrapLog) -> NoReturn:
    """Raise Canceled, after writing the report of the bootstraps finished, if any."""
    done = len(log.records)
    if not done:
        raise Canceled("Training was canceled before its first bootstrap finished; nothing was written.")
    _write_report(report, {"model": "none (canceled before the final model was trained)"})
    raise Canceled(f"Canceled after {done} of {report['requested']} bootstraps: the report {report['path']} gives "
                   f"their figures, and {log.path} keeps them (a re-run of the same training resumes from them). "
                   "No model was written.")


def _run_bootstraps(setup: _Setup, samples: Samples, log: BootstrapLog, bootstraps: int, seed: int,
                    feedback: _Recorded, members: Optional[EnsembleMembers]) -> list[Record]:
    """The bootstrap records: those of ``log`` resumed, then each bootstrap trained and assessed on its held-out
    polygons, until all are done or the run is canceled (the bootstrap then under way is dropped). With
    ``members``, each bootstrap's model is written as a member before its record, and a resumed record whose
    member is missing or another is trained again (with the later ones)."""
    records = log.resume(bootstraps, members.usable if members is not None else None)
    if records:
        feedback.info(f"Resuming: {len(records)} of {bootstraps} bootstraps were finished before ({log.path}).")
    started = time.perf_counter()
    for b in range(len(records), bootstraps):
        seed_b = bootstrap_seed(seed, b)
        split = split_polygons(samples.polygons, samples.codes, np.random.default_rng(seed_b),
                               test_share=1 - TRAIN_SHARE)
        clock = time.perf_counter()
        try:
            fitted = _fit(setup, split, seed_b, StageFeedback(feedback, b, bootstraps + 1,
                                                              f"Bootstrap {b + 1}/{bootstraps}: "))
        except Canceled:
            fitted = None
        if fitted is None or fitted.s2.canceled:
            feedback.warning(f"Canceled during bootstrap {b + 1}/{bootstraps}; it is dropped, the {b} finished "
                             "are kept.")
            break
        test = split == "test"
        predicted = fitted.p_test.argmax(1) + 1
        cm = confusion_matrix(samples.codes[test], predicted)
        record = {"bootstrap": b, "seconds": round(time.perf_counter() - clock, 2), "alpha": fitted.alpha,
                  "best_epoch": fitted.s2.best_epoch, "confusion_matrix": cm.tolist(),
                  "held_out": held_out_counts(samples.polygons[test], predicted)}
        if members is not None:
            record["member_sha256"] = members.save(b, fitted.s2.module, {
                "protocol": PROTOCOL, "bootstrap": b + 1, "bootstraps": bootstraps, "seed": seed_b,
                "best_epoch": fitted.s2.best_epoch, "samples": samples.summary(split)})
        log.add(record)
        kill_point("bootstrap")
        m = lcz_metrics(cm)
        left = (time.perf_counter() - started) / (b + 1 - len(records)) * (bootstraps - b)
        feedback.info(f"Bootstrap {b + 1}/{bootstraps} done in {time.perf_counter() - clock:.0f} s, on "
                      f"{int(test.sum())} held-out samples: OA {m['OA']:.3f}, OA_w {m['OA_w']:.3f}, "
                      f"κ {m['kappa']:.3f}; about {duration_text(left)} left (the other bootstraps and the final "
                      "model).")
    return log.records


def _fit(setup: _Setup, split: npt.NDArray[np.str_], seed: int, feedback: Feedback) -> _Fitted:
    """Train the Sentinel-2 stream (and, with graphs, the GCN and α) on the samples whose ``split`` (str (N,)) is
    'train', validated on 'validation'; the 'test' samples' probabilities in ``_Fitted.p_test``."""
    import torch

    torch.manual_seed(seed)  # a 3D ResNet11 from scratch starts from the same weights for the same seed
    module, _, recipe = _new_sentinel2_stream(setup.base_model)
    part = {name: split == name for name in SPLITS}
    y = setup.labels
    result = train_sentinel2(module, setup.x[part["train"]], y[part["train"]], setup.x[part["validation"]],
                             y[part["validation"]], epochs=setup.epochs, batch_size=setup.batch_size,
                             weights=class_weights(y[part["train"]] + 1), device=setup.device, seed=seed,
                             feedback=feedback, **recipe)
    p = {name: _probabilities(result.module, setup.x[part[name]], setup.device) if part[name].any() else None
         for name in ("validation", "test")}
    fitted = _Fitted(result, p_test=p["test"])
    if setup.graphs is not None:
        fitted.gcn, fitted.alpha, fitted.p_test = _fit_gcn(setup, part, p, seed, feedback)
    return fitted


def _sample_graphs(sentinel2_path: str, vhr_path: str, samples: Samples, device: str,
                   amg_settings: Optional[dict[str, Any]], feedback: Feedback,
                   segmentation: str) -> tuple[list[Optional[ObjectGraph]], dict[str, Any]]:
    """(one ObjectGraph per sample's footprint, None where it has no objects; the VHR stream's card). Made once
    per run (and shared with other runs through the graph cache)."""
    from osgeo import gdal

    from ..runtime import assets
    from ..runtime.grid import PATCH_PX, patch_footprint
    from ..vhr.sam import PAPER_AMG_SETTINGS
    from ..vhr.stream import FootprintGraphs

    ds = gdal.Open(str(sentinel2_path))
    gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
    rule = {**DEFAULT_GRAPH_RULE, "segmentation": segmentation}
    footprints = FootprintGraphs(vhr_path, wkt, device, amg_settings=amg_settings, graph_rule=rule)  # cache, SAM
    graphs = []
    for r, c in zip(samples.rows, samples.cols):
        feedback.check_canceled()
        graph = footprints.graph(patch_footprint(gt, r - PATCH_PX // 2, c - PATCH_PX // 2))
        graphs.append(graph if graph is not None and graph.num_nodes else None)
    feedback.info(f"Object graphs ({segmentation} segmentation): {footprints.sam_runs} SAM run(s), "
                  f"{footprints.cache_hits} from the graph cache.")
    card = {"architecture": "object_gcn", "config": {}, "graph_rule": rule,
            "sam": {"architecture": "vit_t", "checkpoint_sha256": assets.MOBILE_SAM.sha256,
                    "amg": {**PAPER_AMG_SETTINGS, **(amg_settings or {})}}}
    return graphs, card


def _fit_gcn(setup: _Setup, part: dict[str, npt.NDArray[np.bool_]],
             p_s2: dict[str, Any], seed: int,
             feedback: Feedback) -> tuple[Any, float, Optional[npt.NDArray[np.float32]]]:
    """(GCN TrainingResult, α chosen on validation, test probabilities fused where a sample has a graph)."""
    from ..models.gcn import ObjectGCN

    graphs = setup.graphs or []
    has = np.array([g is not None for g in graphs], np.bool_)
    if not (part["train"] & has).any() or not (part["validation"] & has).any():
        from ..vhr.imagery import VHRError
        raise VHRError("The VHR imagery covers no training or no validation sample footprint; the GCN stream "
                       "cannot be trained. Leave VHR empty to train the Sentinel-2 stream only.")

    def pick(mask: npt.NDArray[np.bool_]) -> list[ObjectGraph]:
        return [g for g, m in zip(graphs, mask & has) if m and g is not None]

    y, val = setup.labels, part["validation"]
    result = train_gcn(ObjectGCN(), pick(part["train"]), y[part["train"] & has], pick(val), y[val & has],
                       epochs=setup.epochs, device=setup.device, seed=seed, feedback=feedback)
    alpha = choose_alpha(p_s2["validation"][has[val]], gcn_probabilities(result.module, pick(val), setup.device),
                         y[val & has])
    feedback.info(f"Fusion weight chosen on validation: alpha = {alpha}")
    p_test: Any = None if p_s2["test"] is None else p_s2["test"].copy()  # on.any() implies test samples
    on = has[part["test"]]
    if on.any():
        p_test[on] = alpha * p_test[on] + (1 - alpha) * gcn_probabilities(result.module, pick(part["test"]),
                                                                          setup.device)
    return result, alpha, p_test


def _lczc_graph(npz: Any) -> ObjectGraph:
    """ObjectGraph of an LCZC-GES2 graph file (``x`` (N, 5), ``a`` (N, N)) as the authors' loader reads it:
    A = (a > 0) as stored — a positive diagonal stays a self-loop, no symmetrisation — and Â = D^-1/2 A D^-1/2."""
    edge_index, edge_weight = normalised_edges(np.asarray(npz["a"]) > 0)
    return ObjectGraph(np.asarray(npz["x"], np.float32), edge_index, edge_weight)


def _read_lczc(root: Path, indices: Sequence[int]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64],
                                                            list[ObjectGraph], npt.NDArray[np.int64], int]:
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


def lczc_ges2(root: Union[str, Path], split: str = "random", epochs: int = 100, device: Any = "cpu", seed: int = 0,
              feedback: Optional[Feedback] = None, batch_size: int = 64) -> dict[str, Any]:
    """Train and evaluate the 3D ResNet11, the GCN and their fusion on LCZC-GES2 under one split protocol.

    As ctrlovefly/DF4LCZ: the 3D ResNet11 learns and is tested on the images' ``label``, the GCN on the graphs'
    own ``y``; the fusion is tested on ``y`` (fusion.py), at α = 0.6, then (our addition) at the α chosen on
    validation. Returns a dict, in this order: samples, skipped_missing, graph_y_differs_from_label (per split),
    warnings (list), reference_labels, alpha {paper, validation}, and results {ResNet11_3D, GCN,
    DF4LCZ_paper_alpha, DF4LCZ_validation_alpha} → ``lcz_metrics`` plus ``paper_oa_b_n`` of each.
    """
    from ..models.gcn import ObjectGCN
    from ..models.resnet3d import ResNet11_3D

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


def paper_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The DF4LCZ paper's table columns from a ``lczc_ges2`` metrics dict: OA_B and OA_N both as fusion.py
    computes them (``*_paper``) and over the 17 fixed labels (``*_17_labels``); user's accuracy per LCZ 1–17."""
    return {"OA": metrics["OA"], "OA_B_paper": metrics["OA_B_paper"], "OA_N_paper": metrics["OA_N_paper"],
            "OA_B_17_labels": metrics["OA_B"], "OA_N_17_labels": metrics["OA_N"], "kappa": metrics["kappa"],
            "weighted_F1": metrics["weighted_F1"], "user_accuracy": metrics["user_accuracy"]}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m df4lcz_plugin.training.train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lczc = sub.add_parser("lczc-ges2", help="train and evaluate on the DF4LCZ paper's LCZC-GES2 dataset")
    lczc.add_argument("path", help="the dataset root (sen2_img_patches/, gg_nodes_refine/, patches_split/)")
    lczc.add_argument("--split", choices=sorted(SPLIT_FILES), default="random")
    lczc.add_argument("--epochs", type=int, default=100)
    lczc.add_argument("--device", default="auto")
    lczc.add_argument("--seed", type=int, default=0)
    lczc.add_argument("--batch-size", type=int, default=64, help="Sentinel-2 stream batch (paper: 64)")
    args = parser.parse_args(argv)
    from ..runtime.device import resolve_device

    out = lczc_ges2(args.path, args.split, args.epochs, resolve_device(args.device), args.seed,
                    batch_size=args.batch_size)
    out["results"] = {name: paper_columns(m) for name, m in out["results"].items()}
    from .report import json_safe

    print(json.dumps(json_safe({"split": args.split, **out}), indent=2))


if __name__ == "__main__":
    main()
