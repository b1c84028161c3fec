"""LCZ accuracy reports: HTML (with a confusion-matrix plot by matplotlib), CSV and JSON, each written via a
temporary file."""

import base64
import csv
import html
import io
import json
import math
import textwrap
from pathlib import Path

import numpy as np

from . import legend
from .outputs import atomic_output

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


def confusion_plot_png(cm, title):
    """PNG bytes of the 17 × 17 confusion matrix (rows = reference, columns = map), classes present only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    present = np.nonzero(cm.sum(0) + cm.sum(1))[0]
    sub = cm[np.ix_(present, present)]
    labels = [legend.LABELS[i] for i in present]
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(present), 1.0 + 0.55 * len(present)))
    with np.errstate(invalid="ignore"):
        share = sub / sub.sum(1, keepdims=True)
    ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(sub):
        if value:
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("map (predicted) LCZ")
    ax.set_ylabel("reference LCZ")
    ax.set_title(textwrap.fill(title, 50), fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def json_safe(value):
    """NaN → None, recursively, so the JSON file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _fmt(value):
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def report_files(html_path):
    """The files a training report writes: the HTML page, then its ``.csv``, ``.json`` and ``.png``."""
    base = Path(html_path)
    return [base] + [base.with_suffix(suffix) for suffix in (".csv", ".json", ".png")]


def write_report(html_path, metrics, cm, title, details=None, csv_path=None, json_path=None, png_path=None,
                 warnings=()):
    """Write the HTML report (and optional CSV, JSON, PNG). ``details``: extra key → value rows to show;
    ``warnings``: texts shown in a box at the top (and kept in the JSON), such as a single training class."""
    png = confusion_plot_png(cm, title)
    if png_path:
        with atomic_output(png_path) as tmp, open(tmp, "wb") as handle:
            handle.write(png)
    overall = "".join(f"<tr><th>{k}</th><td>{_fmt(metrics[k])}</td><td>{html.escape(v)}</td></tr>"
                      for k, v in DEFINITIONS.items())
    rows = "".join(
        f"<tr><td>{html.escape(legend.label(code))}</td><td>{metrics['support'][code - 1]}</td>"
        f"<td>{_fmt(metrics['producer_accuracy'][code - 1])}</td><td>{_fmt(metrics['user_accuracy'][code - 1])}</td>"
        f"<td>{_fmt(metrics['F1'][code - 1])}</td></tr>"
        for code in legend.CODES if metrics["support"][code - 1] or np.asarray(cm)[:, code - 1].sum())
    extra = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in (details or {}).items())
    box = "".join(f'<p class="warning">⚠ {html.escape(text)}</p>' for text in warnings)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.warning{{background:#fff3cd;border:1px solid #e0b000;padding:8px}}</style></head><body>
<h1>{html.escape(title)}</h1>
{box}<p>{metrics['n']} reference samples. Rows of the confusion matrix are the reference, columns the map.</p>
<h2>Overall</h2><table><tr><th>metric</th><th>value</th><th>definition</th></tr>{overall}</table>
<h2>Per class</h2><table><tr><th>class</th><th>reference samples</th><th>producer's accuracy</th>
<th>user's accuracy</th><th>F1</th></tr>{rows}</table>
<h2>Confusion matrix</h2><img alt="confusion matrix" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Details</h2><table>{extra}</table>
</body></html>
"""
    with atomic_output(html_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(page)
    if csv_path:
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
    if json_path:
        with atomic_output(json_path) as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(json_safe({"title": title, "metrics": metrics, "definitions": DEFINITIONS,
                                      "confusion_matrix": np.asarray(cm).tolist(), "details": details or {},
                                      "warnings": list(warnings)}),
                          handle, indent=2, default=str, allow_nan=False)
    return html_path
