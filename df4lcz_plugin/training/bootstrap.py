"""The LCZ Generator's bootstrapped accuracy protocol (Demuzere et al. 2021, Front. Environ. Sci. 9:637455) and
the suspicious training areas found by it.

Demuzere's public workflow (``matthiasdemuzere/multitemporal-lcz-mapping``, ``config/*.yaml``): ``NRBOOT`` 25
bootstraps, each a stratified split by polygon with ``BOOTTRESH`` 0.7 of each class's polygons for training;
polygons of ``POLYSIZE`` 300 000 m² or more replaced by a ``BUFFERSIZE`` 300 m buffer around their centroid.

- ``cap_polygons``: the polygon cap, in metres.
- ``bootstrap_seed``: the seed of bootstrap b (or of the final model), independent of the others, so a resumed
  run draws what an uninterrupted one draws.
- ``summarise``: median and IQR over the bootstraps, the averaged confusion matrix.
- ``out_of_fold``: per polygon, what the bootstraps that held it out predicted for its samples.
- ``BootstrapLog``: the finished bootstraps, one JSON line each, rewritten atomically after each, and read back
  by a re-run of the same training.
- ``check_ensemble``: ENSEMBLE (the bootstrap models kept as the members of an ensemble) needs 2 bootstraps or more.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt
from osgeo import ogr, osr

from ..lcz import legend
from .metrics import lcz_metrics
from ..runtime.outputs import atomic_output
from ..sentinel2.checks import _utm_for

DEFAULT_BOOTSTRAPS = 25
MAX_BOOTSTRAPS = 100
TRAIN_SHARE = 0.7  # BOOTTRESH
POLYGON_CAP_M2 = 300_000.0  # POLYSIZE
BUFFER_M = 300.0  # BUFFERSIZE
#: The figures reported as median and IQR (``metrics.lcz_metrics`` keys).
METRICS = ("OA", "OA_u", "OA_bu_wudapt", "OA_bu_binary", "OA_w", "kappa")
#: A polygon is suspicious when it was held out at least this often and its samples got their own label less
#: often than ``SUSPICIOUS_SHARE``.
SUSPICIOUS_MIN_HELD_OUT = 2
SUSPICIOUS_SHARE = 0.5


#: A bootstrap record (``BootstrapLog``): bootstrap, seconds, alpha, best_epoch, confusion_matrix, held_out, and
#: with ENSEMBLE the sha256 of its member model's weights (member_sha256).
Record = dict[str, Any]


def check_bootstraps(bootstraps: float) -> None:
    """Raise ValueError unless 1 ≤ bootstraps (a number) ≤ 100."""
    if not 1 <= bootstraps <= MAX_BOOTSTRAPS:
        raise ValueError(f"BOOTSTRAPS is {bootstraps:g}; give 1 to {MAX_BOOTSTRAPS} (the LCZ Generator makes "
                         f"{DEFAULT_BOOTSTRAPS}; each bootstrap trains one model, so the run takes about "
                         "BOOTSTRAPS + 1 trainings).")


def check_ensemble(bootstraps: float, ensemble: bool) -> None:
    """Raise ValueError when ``ensemble`` is asked for with fewer than 2 bootstraps (its members are the
    bootstrap models)."""
    if ensemble and bootstraps < 2:
        raise ValueError(f"ENSEMBLE needs BOOTSTRAPS of 2 or more (it is {bootstraps:g}): the ensemble's members "
                         "are the bootstrap models, averaged with the final model. Raise BOOTSTRAPS or untick "
                         "ENSEMBLE.")


def _metric_srs(srs: osr.SpatialReference, x: float, y: float) -> osr.SpatialReference:
    """``srs`` when it is projected in metres, else the WGS 84 UTM zone of (x, y) (given in ``srs``)."""
    if srs.IsProjected() and srs.GetLinearUnits() == 1.0:
        return srs
    return _utm_for(srs, x, y)


def cap_polygons(geometries: Sequence[ogr.Geometry],
                 srs: osr.SpatialReference) -> tuple[list[ogr.Geometry], list[int]]:
    """The polygons with each one of 0.3 km² or more replaced by the 300 m buffer around its centroid.

    geometries: OGR polygons in ``srs`` (any CRS: areas and buffers are computed in ``srs`` when it is projected
    in metres, else in the WGS 84 UTM zone of each polygon, and brought back). Returns (list of geometries in
    ``srs``, list of the indices capped). The buffer is GEOS's, 30 segments per quarter circle: its area is
    π·300² within 0.05 %.
    """
    out: list[ogr.Geometry] = []
    capped: list[int] = []
    for index, geometry in enumerate(geometries):
        centroid = geometry.Centroid()
        metric = _metric_srs(srs, centroid.GetX(), centroid.GetY())
        g = geometry.Clone()
        forward = None if metric is srs else osr.CoordinateTransformation(srs, metric)
        if forward is not None:
            g.Transform(forward)
        if g.GetArea() < POLYGON_CAP_M2:
            out.append(geometry)
            continue
        circle = g.Centroid().Buffer(BUFFER_M, 30)
        if forward is not None:
            circle.Transform(osr.CoordinateTransformation(metric, srs))
        out.append(circle)
        capped.append(index)
    return out, capped


def bootstrap_seed(seed: int, bootstrap: Optional[int]) -> int:
    """An int seed (0 ≤ s < 2³²) for bootstrap ``bootstrap`` (0-based) of a run seeded ``seed``; ``None``: the
    final model's."""
    key = [abs(int(seed)), int(seed) < 0, 0 if bootstrap is None else bootstrap + 1]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def held_out_counts(polygons: npt.NDArray[np.integer[Any]],
                    predicted: npt.NDArray[np.integer[Any]]) -> dict[int, list[int]]:
    """{polygon id: [samples predicted as LCZ 1, …, 17]} of a bootstrap's test samples (int arrays (N,))."""
    counts = {}
    for polygon in np.unique(polygons):
        mine = polygons == polygon
        counts[int(polygon)] = np.bincount(predicted[mine] - 1, minlength=len(legend.CODES)).tolist()
    return counts


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """Median, quartiles and IQR of ``METRICS`` and of per-class F1 over the bootstraps, and the averaged
    confusion matrix.

    records: the bootstrap records (dicts with ``confusion_matrix``, 17 × 17 counts). Returns a dict: bootstraps
    (count), median, q1, q3, iqr ({metric: float}), F1 ({LCZ label: {median, q1, q3, iqr}} for the classes
    with reference samples), confusion_matrix (17 × 17 float, the mean of the bootstraps' matrices), and
    per_bootstrap (the ``lcz_metrics`` of each). NaN (e.g. OA_u without urban samples) is left out of the median.
    """
    per = [lcz_metrics(np.asarray(r["confusion_matrix"])) for r in records]

    def stats(values: Sequence[float]) -> dict[str, float]:
        array = np.asarray(values, np.float64)
        if np.isnan(array).all():
            return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "iqr": float("nan")}
        q1, median, q3 = np.nanpercentile(array, [25, 50, 75])
        return {"median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}

    overall = {key: stats([m[key] for m in per]) for key in METRICS}
    f1 = {legend.LABELS[k]: stats([m["F1"][k] for m in per]) for k in range(len(legend.CODES))
          if any(m["support"][k] for m in per)}
    return {"bootstraps": len(records),
            **{part: {key: overall[key][part] for key in METRICS} for part in ("median", "q1", "q3", "iqr")},
            "F1": f1, "confusion_matrix": np.mean([r["confusion_matrix"] for r in records], axis=0).tolist(),
            "per_bootstrap": per}


def out_of_fold(records: Sequence[Record], codes: Sequence[int]) -> list[dict[str, Any]]:
    """Per training polygon, its out-of-fold predictions over the bootstraps that held it out.

    codes: each polygon's LCZ code (length P). Returns a list of P dicts: ``oof_share`` (share of its held-out
    samples given its own label, None if never held out), ``oof_class`` (the LCZ label, e.g. "9" or "D", given
    most often instead, None if none), ``oof_boots`` (bootstraps that held it out) and ``suspicious`` (1 when
    held out at least ``SUSPICIOUS_MIN_HELD_OUT`` times with ``oof_share`` < ``SUSPICIOUS_SHARE``, else 0).
    """
    totals = np.zeros((len(codes), len(legend.CODES)), np.int64)
    boots = np.zeros(len(codes), np.int64)
    for record in records:
        for polygon, counts in record["held_out"].items():
            totals[int(polygon)] += counts
            boots[int(polygon)] += 1
    out = []
    for polygon, code in enumerate(codes):
        row, n = totals[polygon], totals[polygon].sum()
        share = float(row[code - 1] / n) if n else None
        others = row.copy()
        others[code - 1] = 0
        instead = legend.LABELS[int(others.argmax())] if others.any() else None
        flagged = share is not None and boots[polygon] >= SUSPICIOUS_MIN_HELD_OUT and share < SUSPICIOUS_SHARE
        out.append({"oof_share": share, "oof_class": instead, "oof_boots": int(boots[polygon]),
                    "suspicious": int(flagged)})
    return out


def run_key(**inputs: Any) -> str:
    """sha256 hex of what decides a training's bootstraps (JSON-able values; geometries as WKB hex)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def areas_digest(areas: Any) -> str:
    """sha256 hex of the training areas' geometries (WKB), codes and CRS."""
    digest = hashlib.sha256(areas.srs.ExportToWkt().encode())
    for geometry, code in zip(areas.geometries, areas.codes):
        digest.update(geometry.ExportToWkb(ogr.wkbNDR) + bytes([code]))
    return digest.hexdigest()


class BootstrapLog:
    """The finished bootstraps of a training, in a JSON-lines file: a first line {"run": key}, then one record
    per bootstrap. Rewritten whole through ``atomic_output`` after each bootstrap, so a kill leaves the previous
    complete file; a run with another key starts it afresh."""

    def __init__(self, path: Union[str, Path], key: str) -> None:
        self.path, self.key = Path(path), key
        self.records: list[Record] = []

    def resume(self, bootstraps: int, usable: Optional[Callable[[Record], bool]] = None) -> list[Record]:
        """The records of this run already in the file (bootstraps 0…k−1, at most ``bootstraps``), up to the first
        that ``usable`` (if given) refuses: that bootstrap and the later ones are trained again."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            head = json.loads(lines[0]) if lines else {}
        except (OSError, ValueError):
            return []
        if head.get("run") != self.key:
            return []
        records = [json.loads(line) for line in lines[1:]]
        self.records = [r for i, r in enumerate(records) if r["bootstrap"] == i][:bootstraps]
        if usable is not None:
            self.records = self.records[:next((i for i, r in enumerate(self.records) if not usable(r)),
                                              len(self.records))]
        return list(self.records)

    def add(self, record: Record) -> None:
        """Append a finished bootstrap's record and rewrite the file."""
        self.records.append(record)
        with atomic_output(self.path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"run": self.key}) + "\n")
            for r in self.records:
                handle.write(json.dumps(r) + "\n")
