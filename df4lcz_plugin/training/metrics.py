"""LCZ accuracy metrics (``shared/design/lcz_reference.md`` §3).

The confusion matrix ``cm`` is 17 × 17 over LCZ codes 1–17: rows = reference, columns = map.

- OA = trace / total.
- OA_u: urban classes only, trace(cm[1–10, 1–10]) / Σ cm[1–10, 1–10] (Demuzere's code; the LCZ Generator).
- OA_bu, built vs natural — two meanings exist in the WUDAPT literature, both reported and labelled:
  ``OA_bu_wudapt``, as Demuzere's ``create_plots.py::_get_oa_df``: natural = A, B, C, D, F, G (E left out);
  numerator Σ cm[urban, urban] + Σ diag(cm[nat, nat]), denominator adds the urban↔natural off-blocks, so
  natural↔natural confusions drop out of both; and ``OA_bu_binary``, the matrix collapsed to {1–10} vs {A–G}.
  (Deep-learning papers use "OA_BU" for OA over built-up classes only: that is OA_u here, or ``OA_B`` below.)
- OA_w = Σ w_ij n_ij / Σ n_ij with the 17 × 17 weights of Bechtel et al. (2020), ``LCZ_metric.csv`` of
  matthiasdemuzere/multitemporal-lcz-mapping.
- Cohen's κ; per-class producer's accuracy (recall), user's accuracy (precision) and F1; weighted F1.
- The DF4LCZ paper's columns (ctrlovefly/DF4LCZ ``fusion.py``): OA_B and OA_N = correct / total over the
  reference rows of the built (1–10) and natural (A–G) classes. ``lcz_metrics`` computes them on the 17 fixed
  labels; ``paper_oa_b_n`` as ``fusion.py`` does, on a matrix of the classes present only, where rows are
  picked by position (first 10, last 7), so an absent class moves another class into the other group.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

from ..lcz.legend import CODES

N = len(CODES)
URBAN = np.arange(0, 10)
NATURAL_WUDAPT = np.array([10, 11, 12, 13, 15, 16])  # A, B, C, D, F, G (E excluded, as in Demuzere's code)

#: OA_w weights, rows/columns LCZ 1–10, A–G (lcz_reference.md §3).
OA_W_WEIGHTS = np.array([
    [1.00, 0.92, 0.83, 0.67, 0.58, 0.50, 0.58, 0.75, 0.42, 0.75, 0.33, 0.25, 0.08, 0.00, 0.25, 0.00, 0.00],
    [0.92, 1.00, 0.92, 0.58, 0.67, 0.58, 0.67, 0.83, 0.42, 0.83, 0.42, 0.33, 0.25, 0.08, 0.33, 0.08, 0.08],
    [0.83, 0.92, 1.00, 0.50, 0.58, 0.67, 0.75, 0.92, 0.58, 0.92, 0.50, 0.42, 0.33, 0.17, 0.42, 0.17, 0.17],
    [0.67, 0.58, 0.50, 1.00, 0.92, 0.83, 0.75, 0.50, 0.75, 0.58, 0.50, 0.58, 0.50, 0.33, 0.08, 0.33, 0.33],
    [0.58, 0.67, 0.58, 0.92, 1.00, 0.92, 0.83, 0.67, 0.83, 0.67, 0.58, 0.67, 0.50, 0.42, 0.17, 0.42, 0.42],
    [0.50, 0.58, 0.67, 0.83, 0.92, 1.00, 0.92, 0.75, 0.92, 0.75, 0.67, 0.75, 0.67, 0.58, 0.25, 0.50, 0.50],
    [0.58, 0.67, 0.75, 0.75, 0.83, 0.92, 1.00, 0.67, 0.83, 0.67, 0.75, 0.67, 0.58, 0.42, 0.17, 0.42, 0.42],
    [0.75, 0.83, 0.92, 0.50, 0.67, 0.75, 0.67, 1.00, 0.75, 0.92, 0.42, 0.50, 0.42, 0.25, 0.50, 0.33, 0.33],
    [0.42, 0.42, 0.58, 0.75, 0.83, 0.92, 0.83, 0.75, 1.00, 0.67, 0.58, 0.67, 0.75, 0.58, 0.33, 0.58, 0.58],
    [0.75, 0.83, 0.92, 0.58, 0.67, 0.75, 0.67, 0.92, 0.67, 1.00, 0.42, 0.50, 0.42, 0.25, 0.50, 0.33, 0.33],
    [0.33, 0.42, 0.50, 0.50, 0.58, 0.67, 0.75, 0.42, 0.58, 0.42, 1.00, 0.92, 0.83, 0.67, 0.42, 0.67, 0.67],
    [0.25, 0.33, 0.42, 0.58, 0.67, 0.75, 0.67, 0.50, 0.67, 0.50, 0.92, 1.00, 0.92, 0.75, 0.50, 0.75, 0.75],
    [0.08, 0.25, 0.33, 0.50, 0.50, 0.67, 0.58, 0.42, 0.75, 0.42, 0.83, 0.92, 1.00, 0.83, 0.58, 0.83, 0.83],
    [0.00, 0.08, 0.17, 0.33, 0.42, 0.58, 0.42, 0.25, 0.58, 0.25, 0.67, 0.75, 0.83, 1.00, 0.75, 0.92, 0.92],
    [0.25, 0.33, 0.42, 0.08, 0.17, 0.25, 0.17, 0.50, 0.33, 0.50, 0.42, 0.50, 0.58, 0.75, 1.00, 0.75, 0.75],
    [0.00, 0.08, 0.17, 0.33, 0.42, 0.50, 0.42, 0.33, 0.58, 0.33, 0.67, 0.75, 0.83, 0.92, 0.75, 1.00, 0.92],
    [0.00, 0.08, 0.17, 0.33, 0.42, 0.50, 0.42, 0.33, 0.58, 0.33, 0.67, 0.75, 0.83, 0.92, 0.75, 0.92, 1.00],
])


def confusion_matrix(reference: npt.ArrayLike, predicted: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """17 × 17 int64 counts of (reference, predicted) LCZ codes 1–17; pairs with any other value are skipped."""
    reference, predicted = np.asarray(reference).ravel(), np.asarray(predicted).ravel()
    keep = np.isin(reference, CODES) & np.isin(predicted, CODES)
    return np.bincount((reference[keep] - 1) * N + predicted[keep] - 1, minlength=N * N).reshape(N, N)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def lcz_metrics(cm: npt.ArrayLike) -> dict[str, Any]:
    """All metrics of a 17 × 17 confusion matrix as a dict (NaN where a denominator is 0).

    Keys: n, OA, OA_u, OA_bu_wudapt, OA_bu_binary, OA_w, kappa, OA_B, OA_N, weighted_F1, and per-class lists
    (index k = LCZ code k+1) producer_accuracy, user_accuracy, F1, support.
    """
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    diag = np.diag(cm)
    urban_block = cm[np.ix_(URBAN, URBAN)]
    nat = NATURAL_WUDAPT
    bu_num = urban_block.sum() + np.diag(cm[np.ix_(nat, nat)]).sum()
    bu_den = bu_num + cm[np.ix_(URBAN, nat)].sum() + cm[np.ix_(nat, URBAN)].sum()
    built = np.arange(10)
    natural = np.arange(10, 17)
    binary_correct = cm[np.ix_(built, built)].sum() + cm[np.ix_(natural, natural)].sum()
    expected = (cm.sum(0) * cm.sum(1)).sum() / total ** 2 if total else float("nan")
    oa = _ratio(diag.sum(), total)
    support = cm.sum(1)
    producer = np.array([_ratio(d, s) for d, s in zip(diag, support)])
    user = np.array([_ratio(d, p) for d, p in zip(diag, cm.sum(0))])
    with np.errstate(invalid="ignore"):
        f1 = np.where(producer + user > 0, 2 * producer * user / (producer + user), 0.0)
    f1 = np.where(np.isnan(producer) & np.isnan(user), np.nan, np.nan_to_num(f1))
    present = support > 0
    return {
        "n": int(total),
        "OA": oa,
        "OA_u": _ratio(np.trace(urban_block), urban_block.sum()),
        "OA_bu_wudapt": _ratio(bu_num, bu_den),
        "OA_bu_binary": _ratio(binary_correct, total),
        "OA_w": _ratio((OA_W_WEIGHTS * cm).sum(), total),
        "kappa": _ratio(oa - expected, 1 - expected) if total else float("nan"),
        "OA_B": _ratio(diag[built].sum(), cm[built].sum()),
        "OA_N": _ratio(diag[natural].sum(), cm[natural].sum()),
        "weighted_F1": _ratio((np.nan_to_num(f1) * support)[present].sum(), support[present].sum()),
        "producer_accuracy": producer.tolist(),
        "user_accuracy": user.tolist(),
        "F1": f1.tolist(),
        "support": support.astype(int).tolist(),
    }


def paper_oa_b_n(cm: npt.ArrayLike) -> dict[str, float]:
    """{"OA_B_paper", "OA_N_paper"} of a 17 × 17 ``cm`` computed as ctrlovefly/DF4LCZ ``fusion.py`` does.

    fusion.py calls sklearn's ``confusion_matrix(true, pred)`` without ``labels=``: a k × k matrix of the k
    classes present in reference ∪ map, in code order. OA_B = Σ_{i<10} cm[i, i] / Σ rows 0–9; OA_N = the same
    over rows i ≥ k − 7. With k = 17 both equal ``lcz_metrics``' OA_B and OA_N; with a class absent the rows
    shift (LCZ 7 absent: row 9 is LCZ A, counted as built). With k < 10, fusion.py's OA_B raises IndexError:
    NaN here; with k < 7, its OA_N takes all rows, as here. NaN where a denominator is 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    present = np.nonzero(cm.sum(0) + cm.sum(1))[0]
    sub = cm[np.ix_(present, present)]
    k, diag = len(present), np.diag(sub)
    last = np.arange(max(0, k - 7), k)
    return {"OA_B_paper": _ratio(diag[:10].sum(), sub[:10].sum()) if k >= 10 else float("nan"),
            "OA_N_paper": _ratio(diag[last].sum(), sub[last].sum())}
