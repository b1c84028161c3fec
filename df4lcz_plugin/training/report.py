"""LCZ accuracy reports: HTML (with a confusion-matrix plot by matplotlib), CSV and JSON, each written via a
temporary file; ``write_bootstrap_report`` for the bootstrapped training (median and IQR, boxplots, the averaged
confusion matrix, the suspicious training areas)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import textwrap
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import numpy.typing as npt

from ..lcz import legend
from ..runtime.outputs import PathLike, atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .training_areas import TrainingAreas

#: The figures of an assessment (``metrics``): name → value, or per class (17 values, LCZ 1–10, A–G), and "n".
Metrics = Mapping[str, Any]

DEFINITIONS = {
    "OA": "overall accuracy",
    "OA_u": "urban classes only (LCZ 1–10 block of the matrix; WUDAPT / LCZ Generator)",
    "OA_bu_wudapt": "built vs natural, WUDAPT / LCZ Generator definition (Demuzere's code: natural = A, B, C, D, "
                    "F, G without E; natural↔natural confusions ignored)",
    "OA_bu_binary": "built vs natural, matrix collapsed to two classes {1–10} vs {A–G}",
    "OA_w": "weighted accuracy, Bechtel et al. 2020 weights (LCZ_metric.csv)",
    "kappa": "Cohen's kappa",
    "OA_B": "DF4LCZ paper's OA_B: accuracy over the reference built classes (1–10) — what deep-learning papers "
            "call OA_BU",
    "OA_N": "DF4LCZ paper's OA_N: accuracy over the reference natural classes (A–G)",
    "weighted_F1": "F1 averaged over classes, weighted by reference support",
}


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


def confusion_plot_png(cm: npt.ArrayLike, title: str) -> bytes:
    """PNG bytes of the 17 × 17 confusion matrix (rows = reference, columns = map), classes present only.
    Counts or averaged counts (shown to 1 decimal)."""
    plt = _pyplot()

    matrix = np.asarray(cm)
    present = np.nonzero(matrix.sum(0) + matrix.sum(1))[0]
    sub = matrix[np.ix_(present, present)]
    labels = [legend.LABELS[i] for i in present]
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(present), 1.0 + 0.55 * len(present)))
    with np.errstate(invalid="ignore"):
        share = sub / sub.sum(1, keepdims=True)
    ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(sub):
        if value:
            ax.text(j, i, f"{round(value, 1):g}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("map (predicted) LCZ")
    ax.set_ylabel("reference LCZ")
    ax.set_title(textwrap.fill(title, 50), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def json_safe(value: Any) -> Any:
    """NaN → None, recursively, so the JSON file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def report_files(html_path: PathLike) -> list[Path]:
    """The files a training report writes: the HTML page, then its ``.csv``, ``.json``, ``.png`` (the confusion
    matrix), ``_boxplots.png`` and ``.bootstraps.jsonl`` (the finished bootstraps, ``bootstrap.BootstrapLog``)."""
    base = Path(html_path)
    sidecars = [base.with_suffix(suffix) for suffix in (".csv", ".json", ".png")]
    return [base, *sidecars, base.with_name(base.stem + "_boxplots.png"), base.with_suffix(".bootstraps.jsonl")]


_STYLE = """<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:8px}</style>"""


def _write_page(html_path: PathLike, title: str, body: str) -> None:
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n{_STYLE}'
            f"</head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    with atomic_output(html_path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(page)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def _write_json(path: PathLike, data: Mapping[str, Any]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(json_safe(data), handle, indent=2, default=str, allow_nan=False)


def write_report(html_path: PathLike, metrics: Metrics, cm: npt.ArrayLike, title: str,
                 details: Optional[Mapping[str, Any]] = None, csv_path: Optional[PathLike] = None,
                 json_path: Optional[PathLike] = None, png_path: Optional[PathLike] = None,
                 warnings: Sequence[str] = (), filtered: Optional[Metrics] = None) -> PathLike:
    """Write the HTML report (and optional CSV, JSON, PNG). ``details``: extra key → value rows to show;
    ``warnings``: texts shown in a box at the top (and kept in the JSON), such as a single training class;
    ``filtered``: the metrics of the map after the LCZ Generator's filter, shown beside the raw ones."""
    png = confusion_plot_png(cm, title)
    if png_path:
        _write_bytes(png_path, png)
    overall = "".join(f"<tr><th>{k}</th><td>{_fmt(metrics[k])}</td><td>{html.escape(v)}</td></tr>"
                      for k, v in DEFINITIONS.items())
    _write_page(html_path, title, f"""{_warnings(warnings)}<p>{metrics['n']} reference samples. Rows of the confusion
matrix are the reference, columns the map.</p>
<h2>Overall</h2><table><tr><th>metric</th><th>value</th><th>definition</th></tr>{overall}</table>
<h2>Per class</h2><table><tr><th>class</th><th>reference samples</th><th>producer's accuracy</th>
<th>user's accuracy</th><th>F1</th></tr>{_class_rows(metrics, cm)}</table>
{_filtered_section(metrics, filtered)}<h2>Confusion matrix</h2>{_img(png, "confusion matrix")}
<h2>Details</h2>{_details(details)}""")
    if csv_path:
        _write_metrics_csv(csv_path, metrics, cm, filtered)
    if json_path:
        _write_json(json_path, {"title": title, "metrics": metrics, "definitions": DEFINITIONS,
                                "confusion_matrix": np.asarray(cm).tolist(), "details": details or {},
                                "warnings": list(warnings), **({"filtered_metrics": filtered} if filtered else {})})
    return html_path


def _class_rows(metrics: Metrics, cm: npt.ArrayLike) -> str:
    """The HTML rows of the per-class table: each class present in the reference or the map (column of ``cm``)."""
    return "".join(
        f"<tr><td>{html.escape(legend.label(code))}</td><td>{metrics['support'][code - 1]}</td>"
        f"<td>{_fmt(metrics['producer_accuracy'][code - 1])}</td><td>{_fmt(metrics['user_accuracy'][code - 1])}</td>"
        f"<td>{_fmt(metrics['F1'][code - 1])}</td></tr>"
        for code in legend.CODES if metrics["support"][code - 1] or np.asarray(cm)[:, code - 1].sum())


def _write_metrics_csv(csv_path: PathLike, metrics: Metrics, cm: npt.ArrayLike, filtered: Optional[Metrics]) -> None:
    """The report's CSV (metric, class, value): the overall figures, the per-class ones, the rows of the
    confusion matrix (space-separated counts) and, with ``filtered``, the filtered map's overall figures."""
    with atomic_output(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["metric", "class", "value"])
            for key in DEFINITIONS:
                writer.writerow([key, "", metrics[key]])
            for code in legend.CODES:
                for key in ("support", "producer_accuracy", "user_accuracy", "F1"):
                    writer.writerow([key, legend.LABELS[code - 1], metrics[key][code - 1]])
            for label, row in zip(legend.LABELS, np.asarray(cm)):
                writer.writerow(["confusion_row", label, " ".join(map(str, row))])
            if filtered:
                for key in DEFINITIONS:
                    writer.writerow([f"filtered_{key}", "", filtered[key]])


def _filtered_section(metrics: Metrics, filtered: Optional[Metrics]) -> str:
    """The raw and the filtered map's overall figures side by side (none without ``filtered``)."""
    if not filtered:
        return ""
    rows = "".join(f"<tr><th>{k}</th><td>{_fmt(metrics[k])}</td><td>{_fmt(filtered[k])}</td></tr>"
                   for k in ("OA", "OA_u", "OA_bu_wudapt", "OA_w", "kappa"))
    return ("<h2>Raw and filtered map</h2><p>The filtered map is the map after the LCZ Generator's Gaussian filter "
            "(per-class kernels, 'Filter an LCZ map'), the product most users take. The LCZ Generator's accuracy "
            "figures are those of the raw map.</p><table><tr><th>metric</th><th>raw map</th><th>filtered map</th>"
            f"</tr>{rows}</table>")


def _warnings(warnings: Sequence[str]) -> str:
    return "".join(f'<p class="warning">⚠ {html.escape(text)}</p>' for text in warnings)


def _details(details: Optional[Mapping[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in (details or {}).items())
    return f"<table>{rows}</table>"


def boxplots_png(summary: Mapping[str, Any], title: str) -> bytes:
    """PNG bytes of two boxplots over the bootstraps: the ``bootstrap.METRICS`` and the per-class F1."""
    from .bootstrap import METRICS

    plt = _pyplot()
    per = summary["per_bootstrap"]
    f1_labels = list(summary["F1"])

    def column(values: Sequence[float]) -> npt.NDArray[np.float64]:
        array = np.asarray(values, np.float64)
        return array[~np.isnan(array)]

    widths = {"width_ratios": [len(METRICS), len(f1_labels)]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw=widths)
    left.boxplot([column([m[k] for m in per]) for k in METRICS])
    left.set_xticks(range(1, len(METRICS) + 1), METRICS)
    right.boxplot([column([m["F1"][legend.LABELS.index(label)] for m in per]) for label in f1_labels])
    right.set_xticks(range(1, len(f1_labels) + 1), [f"LCZ {label}" for label in f1_labels])
    left.set_title("Overall, held-out polygons", fontsize=9)
    right.set_title("F1 per class", fontsize=9)
    for ax in (left, right):
        ax.set_ylim(0, 1.02)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _suspicious_section(areas: TrainingAreas, oof: Sequence[Mapping[str, Any]]) -> str:
    """The flagged training areas as an HTML table (polygon number, class, out-of-fold figures, attributes)."""
    from .bootstrap import SUSPICIOUS_MIN_HELD_OUT, SUSPICIOUS_SHARE

    flagged = [i for i, o in enumerate(oof) if o["suspicious"]]
    names = [name for name, _ in areas.fields]

    def attributes(i: int) -> str:
        values = areas.attributes[i] if areas.attributes else []
        return html.escape(", ".join(f"{n}={v}" for n, v in zip(names, values) if v is not None))

    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{html.escape(legend.label(areas.codes[i]))}</td>"
        f"<td>{_fmt(oof[i]['oof_share'])}</td><td>{html.escape(str(oof[i]['oof_class']))}</td>"
        f"<td>{oof[i]['oof_boots']}</td><td>{attributes(i)}</td></tr>" for i in flagged)
    held = sum(o["oof_boots"] > 0 for o in oof)
    text = (f"<p>{len(flagged)} of {len(oof)} training areas are suspicious ({held} were held out at least once). "
            f"Rule: held out in at least {SUSPICIOUS_MIN_HELD_OUT} bootstraps, and less than "
            f"{SUSPICIOUS_SHARE:.0%} of its held-out samples mapped as its own class (oof_share). Check their "
            "class and outline against the imagery; oof_class is the class most often given instead.</p>")
    if not flagged:
        return text
    return (text + "<table><tr><th>#</th><th>class</th><th>oof_share</th><th>oof_class</th>"
            f"<th>held out (bootstraps)</th><th>fields</th></tr>{rows}</table>")


def write_bootstrap_report(html_path: PathLike, summary: Mapping[str, Any], requested: int, areas: TrainingAreas,
                           oof: Sequence[Mapping[str, Any]], details: Optional[Mapping[str, Any]] = None,
                           warnings: Sequence[str] = ()) -> PathLike:
    """Write the bootstrapped training's report: HTML, and beside it ``.csv`` (median, Q1, Q3, IQR per figure),
    ``.json`` (everything, with each bootstrap's metrics and each polygon's out-of-fold figures), ``.png`` (the
    averaged confusion matrix) and ``_boxplots.png`` (``report_files``).

    summary: ``bootstrap.summarise``; requested: the bootstraps asked for (more than ``summary['bootstraps']``
    when canceled); areas: the ``TrainingAreas``; oof: ``bootstrap.out_of_fold``; details: key → value rows.
    """
    from .bootstrap import METRICS

    _, csv_path, json_path, png_path, box_path, _ = report_files(html_path)
    done = summary["bootstraps"]
    title = f"Bootstrapped accuracy on held-out polygons ({done} bootstrap{'s' if done != 1 else ''})"
    cm_png = confusion_plot_png(summary["confusion_matrix"], f"{title}: averaged confusion matrix")
    box_png = boxplots_png(summary, title)
    _write_bytes(png_path, cm_png)
    _write_bytes(box_path, box_png)
    status = (f"{done} bootstraps, as requested." if done == requested else
              f"<b>Canceled: {done} of the {requested} bootstraps requested were finished; the figures are of "
              f"those {done}.</b>")
    overall = "".join(f"<tr><th>{k}</th><td>{_fmt(summary['median'][k])}</td><td>{_fmt(summary['iqr'][k])}</td>"
                      f"<td>{_fmt(summary['q1'][k])}–{_fmt(summary['q3'][k])}</td>"
                      f"<td>{html.escape(DEFINITIONS[k])}</td></tr>" for k in METRICS)
    f1 = "".join(f"<tr><td>{html.escape(legend.label(legend.LABELS.index(label) + 1))}</td><td>{_fmt(s['median'])}"
                 f"</td><td>{_fmt(s['iqr'])}</td></tr>" for label, s in summary["F1"].items())
    _write_page(html_path, title, f"""{_warnings(warnings)}<p>{status} Each bootstrap trains on 70 % of each
class's polygons and is assessed on the other 30 % (the LCZ Generator's protocol); the figures are the median and
the interquartile range (IQR = Q3 − Q1) over the bootstraps.</p>
<h2>Overall</h2><table><tr><th>metric</th><th>median</th><th>IQR</th><th>Q1–Q3</th><th>definition</th></tr>
{overall}</table>
<h2>F1 per class</h2><table><tr><th>class</th><th>median</th><th>IQR</th></tr>{f1}</table>
<h2>Boxplots</h2>{_img(box_png, "boxplots")}
<h2>Averaged confusion matrix</h2><p>The mean over the bootstraps of each held-out confusion matrix (samples;
rows = reference, columns = map).</p>{_img(cm_png, "averaged confusion matrix")}
<h2>Suspicious training areas</h2>{_suspicious_section(areas, oof)}
<h2>Details</h2>{_details(details)}""")
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "class", "median", "q1", "q3", "iqr"])
        for key in METRICS:
            writer.writerow([key, "", *(summary[part][key] for part in ("median", "q1", "q3", "iqr"))])
        for label, s in summary["F1"].items():
            writer.writerow(["F1", label, s["median"], s["q1"], s["q3"], s["iqr"]])
    _write_json(json_path, {"title": title, "bootstraps": done, "requested": requested, "definitions": DEFINITIONS,
                            **summary, "out_of_fold": oof, "details": details or {}, "warnings": list(warnings)})
    return html_path
