"""The LCZ factsheet, like the LCZ Generator's (Demuzere et al. 2021, Front. Environ. Sci. 9:637455): one HTML page
with PNG figures beside it (``<factsheet>_*.png``) gathering a bootstrapped training (``trainmodel``'s report JSON),
its training areas, the LCZ map it made (raw and filtered) and, given a local copy of the global LCZ map
(Demuzere et al. 2022), the agreement of our map with it. Figures come from ``report`` and ``quicklook``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from osgeo import gdal, osr

from ..lcz import legend
from ..lcz.lcz_raster import read_lcz_map
from ..runtime.outputs import atomic_output
from ..lcz.quicklook import render_quicklook
from .bootstrap import METRICS
from .report import (DEFINITIONS, _fmt, _png, _pyplot, _suspicious_section, _write_bytes, _write_page, boxplots_png,
                     confusion_plot_png)

if TYPE_CHECKING:
    from .training_areas import TrainingAreas

gdal.UseExceptions()

#: The figures a factsheet writes beside its HTML page: suffix of ``<factsheet stem>_<suffix>.png``.
FIGURES = ("training_areas", "boxplots", "confusion", "map", "filtered")


class FactsheetError(ValueError):
    """An input of the factsheet is not what it must be (the message says which and how to fix it)."""


def factsheet_files(html_path: str | Path) -> list[Path]:
    """The files a factsheet writes: the HTML page, then ``<stem>_<figure>.png`` for each of ``FIGURES``."""
    base = Path(html_path)
    return [base, *(base.with_name(f"{base.stem}_{name}.png") for name in FIGURES)]


def read_training_report(path: str | Path) -> dict:
    """The JSON of a ``trainmodel`` report, given its ``.html`` or its ``.json`` (``report.report_files``).

    Raises FactsheetError when it is missing or is not a bootstrapped training's report."""
    json_path = Path(path).with_suffix(".json")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FactsheetError(f"Cannot read the training report's JSON {json_path} ({error}); give the report "
                             "(.html or .json) that 'Train DF4LCZ model' wrote, with its .json beside it.") from None
    if not isinstance(data, dict) or not {"median", "per_bootstrap", "out_of_fold"} <= data.keys():
        raise FactsheetError(f"{json_path} is not the report of a bootstrapped training ('Train DF4LCZ model'): it "
                             "has no median, per-bootstrap or out-of-fold figures.")
    return data


def class_areas(areas: TrainingAreas) -> dict[int, tuple[int, float]]:
    """LCZ code → (polygons, area in km²) of the training areas (``training_areas.TrainingAreas``), as read and
    before any capping; areas are measured in a Lambert azimuthal equal-area projection centred on them, so they
    are true areas on any CRS."""
    envelope = np.array([g.GetEnvelope() for g in areas.geometries])  # (P, 4): xmin, xmax, ymin, ymax
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    for srs in (wgs84, areas.srs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    centre = osr.CoordinateTransformation(areas.srs, wgs84).TransformPoint(
        float(envelope[:, :2].mean()), float(envelope[:, 2:].mean()))
    laea = osr.SpatialReference()
    laea.ImportFromProj4(f"+proj=laea +lat_0={centre[1]} +lon_0={centre[0]} +datum=WGS84 +units=m")
    to_laea = osr.CoordinateTransformation(areas.srs, laea)
    out: dict[int, tuple[int, float]] = {}
    for geometry, code in zip(areas.geometries, areas.codes):
        projected = geometry.Clone()
        projected.Transform(to_laea)
        count, km2 = out.get(code, (0, 0.0))
        out[code] = (count + 1, km2 + projected.GetArea() / 1e6)
    return dict(sorted(out.items()))


def training_areas_png(per_class: dict[int, tuple[int, float]]) -> bytes:
    """PNG bytes of two bar charts in the LCZ colours: polygons and km² per class (``class_areas``)."""
    plt = _pyplot()
    codes = list(per_class)
    colours = [legend.palette()[code - 1] for code in codes]
    labels = [f"LCZ {legend.LABELS[code - 1]}" for code in codes]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, values, title in zip(axes, zip(*per_class.values()), ("Training areas (polygons)", "Area (km²)")):
        ax.bar(labels, values, color=colours, edgecolor="#333333")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def agreement(lcz_path: str | Path, global_path: str | Path) -> dict:
    """The agreement of an LCZ map with the global LCZ map (or any LCZ raster, codes 1–17 or 101–107), on the
    map's grid: the global map is warped onto it by GDAL (nearest neighbour). Over the cells where both have a
    class: ``cells``, ``agreement`` (share with the same class) and ``per_class``: LCZ label → (cells of that
    class in our map, share of them the global map gives the same class). Agreement, not accuracy: the global map
    is a map, not a reference. Raises FactsheetError when the two do not overlap."""
    ours = gdal.Open(str(lcz_path))
    codes = legend.normalise_codes(ours.GetRasterBand(1).ReadAsArray())
    gt = ours.GetGeoTransform()
    bounds = (gt[0], gt[3] + gt[5] * ours.RasterYSize, gt[0] + gt[1] * ours.RasterXSize, gt[3])
    warped = gdal.Warp("", str(global_path), format="MEM", outputBounds=bounds, width=ours.RasterXSize,
                       height=ours.RasterYSize, dstSRS=ours.GetProjection(), resampleAlg="near",
                       outputType=gdal.GDT_Int32, dstNodata=0)
    other = legend.normalise_codes(warped.GetRasterBand(1).ReadAsArray())
    return agreement_of(codes, other, str(global_path))


def agreement_of(ours: npt.NDArray[np.integer], other: npt.NDArray[np.integer], name: str) -> dict:
    """``agreement`` of two (rows, cols) arrays of LCZ codes 1–17 on one grid (0 = no data)."""
    both = (ours > 0) & (other > 0)
    if not both.any():
        raise FactsheetError(f"The global LCZ map {name} has no class where the LCZ map has one: they do not "
                             "overlap. Give the global map's window of this map's area ('Global LCZ map').")
    same = both & (ours == other)
    per_class = {legend.LABELS[code - 1]: (int(n), float(same[ours == code].sum() / n))
                 for code in legend.CODES if (n := (both & (ours == code)).sum())}
    return {"cells": int(both.sum()), "agreement": float(same.sum() / both.sum()), "per_class": per_class}


def _img(path: Path, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{html.escape(path.name)}">'


def _quicklook(lcz_path: str | Path, png_path: Path, title: str) -> None:
    with atomic_output(png_path) as tmp:
        render_quicklook(lcz_path, tmp, title=title)


def _training_section(per_class: dict[int, tuple[int, float]], figure: Path) -> str:
    rows = "".join(f"<tr><td>{html.escape(legend.label(code))}</td><td>{count}</td><td>{km2:.2f}</td></tr>"
                   for code, (count, km2) in per_class.items())
    total = sum(count for count, _ in per_class.values())
    return (f"<h2>Training areas</h2><p>{total} polygons in {len(per_class)} classes, as drawn (before the "
            "300 m buffer that replaces polygons of 0.3 km² or more in training).</p><table><tr><th>class</th>"
            f"<th>polygons</th><th>area (km²)</th></tr>{rows}</table>{_img(figure, 'training areas per class')}")


def _accuracy_section(report: dict, boxplots: Path, confusion: Path) -> str:
    done, requested = report["bootstraps"], report.get("requested", report["bootstraps"])
    overall = "".join(f"<tr><th>{k}</th><td>{_fmt(report['median'][k])}</td><td>{_fmt(report['iqr'][k])}</td>"
                      f"<td>{html.escape(DEFINITIONS[k])}</td></tr>" for k in METRICS)
    f1 = "".join(f"<tr><td>LCZ {html.escape(label)}</td><td>{_fmt(s['median'])}</td><td>{_fmt(s['iqr'])}</td></tr>"
                 for label, s in report["F1"].items())
    canceled = "" if done == requested else f" (canceled: {done} of the {requested} requested)"
    return (f"<h2>Accuracy over {done} bootstraps{canceled}</h2><p>Each bootstrap trains on 70 % of each class's "
            "polygons and is assessed on the other 30 % (the LCZ Generator's protocol), on the raw map: median and "
            "interquartile range (IQR).</p><table><tr><th>metric</th><th>median</th><th>IQR</th><th>definition</th>"
            f"</tr>{overall}</table><table><tr><th>F1</th><th>median</th><th>IQR</th></tr>{f1}</table>"
            f"{_img(boxplots, 'boxplots')}<h3>Averaged confusion matrix</h3><p>Mean over the bootstraps of the "
            f"held-out confusion matrices (rows = reference, columns = map).</p>{_img(confusion, 'confusion')}")


def _agreement_section(results: dict[str, dict], global_path: str | Path | None) -> str:
    if not results or global_path is None:  # results come with a global map only
        return ""
    labels = sorted({label for r in results.values() for label in r["per_class"]}, key=legend.LABELS.index)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in results)
    overall = "".join(f"<td>{_fmt(r['agreement'])} ({r['cells']} cells)</td>" for r in results.values())
    rows = "".join(f"<tr><td>LCZ {label}</td>" + "".join(
        f"<td>{_fmt(r['per_class'][label][1])} ({r['per_class'][label][0]} cells)</td>" if label in r["per_class"]
        else "<td>—</td>" for r in results.values()) + "</tr>" for label in labels)
    return (f"<h2>Agreement with the global LCZ map</h2><p>The share of cells given the same class by our map and "
            f"by {html.escape(Path(global_path).name)}, warped onto our map's grid (nearest neighbour), over the "
            "cells where both have a class; per class, the share of our map's cells of that class. This is "
            "agreement between two maps, not accuracy: the global map has its own errors.</p>"
            f"<table><tr><th>class</th>{head}</tr><tr><th>all classes</th>{overall}</tr>{rows}</table>")


def write_factsheet(html_path: str | Path, report: dict, areas: TrainingAreas, lcz_path: str | Path,
                    filtered_path: str | Path | None = None, global_path: str | Path | None = None,
                    title: str = "LCZ factsheet") -> dict:
    """Write the factsheet ``html_path`` and its figures (``factsheet_files``), each via a temporary file.

    report: ``read_training_report``; areas: the training areas the report was made from (``TrainingAreas``, the
    same polygons in the same order); lcz_path: the raw LCZ map (GeoTIFF, codes 1–17); filtered_path: its filtered
    map (``lcz_filter``); global_path: a local copy of the global LCZ map (any CRS). Returns the agreement figures
    ({"raw map": ``agreement``, "filtered map": …}; empty without ``global_path``).

    Raises FactsheetError when the areas are not the report's, or the global map does not overlap the map;
    ``lcz_raster.LCZMapError`` when a map is not an LCZ map (several bands, other values). Nothing is written then.
    """
    if len(report["out_of_fold"]) != len(areas):
        raise FactsheetError(f"The training report covers {len(report['out_of_fold'])} training areas, the training "
                             f"areas given have {len(areas)}: give the layer the model was trained on.")
    maps = {"raw map": lcz_path, **({"filtered map": filtered_path} if filtered_path else {})}
    for path in [*maps.values(), *([global_path] if global_path else [])]:
        read_lcz_map(path)  # an LCZ map each, before anything is written (raises LCZMapError)
    results = {name: agreement(path, global_path) for name, path in maps.items()} if global_path else {}
    page, training, boxplots, confusion, raw_png, filtered_png = factsheet_files(html_path)
    per_class = class_areas(areas)
    _write_bytes(training, training_areas_png(per_class))
    _write_bytes(boxplots, boxplots_png(report, "Bootstrapped accuracy on held-out polygons"))
    _write_bytes(confusion, confusion_plot_png(report["confusion_matrix"], "Averaged confusion matrix"))
    _quicklook(lcz_path, raw_png, "LCZ map (raw)")
    maps_html = _img(raw_png, "raw LCZ map")
    if filtered_path:
        _quicklook(filtered_path, filtered_png, "LCZ map (filtered, LCZ Generator Gaussian filter)")
        maps_html += _img(filtered_png, "filtered LCZ map")
    filtered_text = f"; filtered: {html.escape(str(filtered_path))}" if filtered_path else ""
    body = "".join([
        _training_section(per_class, training), _accuracy_section(report, boxplots, confusion),
        f"<h2>Suspicious training areas</h2>{_suspicious_section(areas, report['out_of_fold'])}",
        f"<h2>LCZ map</h2><p>{html.escape(str(lcz_path))}{filtered_text}</p>{maps_html}",
        _agreement_section(results, global_path)])
    _write_page(page, title, body)
    return results
