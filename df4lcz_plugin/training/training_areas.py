"""LCZ training areas (TAs): polygons with an LCZ class, from any OGR vector file or a WUDAPT KML/KMZ.

Class values accepted: codes 1–17; WUDAPT-2015 codes 101–107 for A–G; letters A–G (any case); the same as
text. A WUDAPT KML/KMZ (the LCZ Generator template) holds one folder per class named 1–10 and A–G; a folder whose
placemarks are all named "ROI" (the region of interest) is skipped.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from osgeo import gdal, ogr, osr

from ..lcz.legend import LABELS

gdal.UseExceptions()
ogr.UseExceptions()

#: An attribute value of a training area (numbers as numbers, other types as text, unset as None).
Value = int | float | str | None
#: (name, OGR field type) of each attribute field of a layer.
Schema = list[tuple[str, int]]
#: (geometry, LCZ code, attribute values) of one training area (``_row``).
Row = tuple[ogr.Geometry, int, list[Value]]
CLASS_FIELD_GUESSES = ("lcz", "LCZ", "class", "Class", "CLASS", "lcz_class", "code")


class TrainingAreaError(ValueError):
    """The training areas cannot be read or hold unknown classes."""


def parse_code(value: object) -> int | None:
    """An LCZ code 1–17 from a class value (17, "17", 107, "G", "g"); None if it is not one."""
    text = str(value).strip().upper()
    if text in LABELS[10:]:
        return LABELS.index(text) + 1
    if re.fullmatch(r"\d+(\.0+)?", text):
        number = int(float(text))
        if 1 <= number <= 17:
            return number
        if 101 <= number <= 107:
            return number - 90
    return None


@dataclass
class TrainingAreas:
    """Polygons (OGR geometries, in ``srs``) with their LCZ codes and a stable polygon id (0…n−1).

    fields: the source's attribute fields as (name, OGR field type); attributes: each polygon's values of them
    (int, float, str or None; other types as text), so that outputs per polygon can carry them.
    """

    geometries: list[ogr.Geometry]
    codes: list[int]
    srs: osr.SpatialReference
    fields: Schema = field(default_factory=list)
    attributes: list[list[Value]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.codes)


def _schema(layer: ogr.Layer) -> Schema:
    """(name, OGR field type) of a layer's attribute fields."""
    definition = layer.GetLayerDefn()
    return [(definition.GetFieldDefn(i).GetName(), definition.GetFieldDefn(i).GetType())
            for i in range(definition.GetFieldCount())]


def _values(feature: ogr.Feature, schema: Schema) -> list[Value]:
    """A feature's values of ``schema`` (numbers as numbers, everything else as text, unset as None)."""
    numeric = (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)
    return [None if feature.GetFieldIndex(name) < 0 or not feature.IsFieldSetAndNotNull(name)
            else feature.GetField(name) if kind in numeric else feature.GetFieldAsString(name)
            for name, kind in schema]


def _is_roi_folder(layer: ogr.Layer) -> bool:
    names = [feature.GetField("Name") if feature.GetFieldIndex("Name") >= 0 else None for feature in layer]
    layer.ResetReading()
    return bool(names) and all(str(n).strip().upper() == "ROI" for n in names)


def _row(feature: ogr.Feature, code: int, schema: Schema) -> Row:
    """(geometry, LCZ code, attribute values) of one training area."""
    return feature.GetGeometryRef().Clone(), code, _values(feature, schema)


def _read_kml_folders(ds: gdal.Dataset) -> tuple[list[Row], osr.SpatialReference | None, Schema | None]:
    """(rows of ``_row``, srs, schema) of a WUDAPT KML/KMZ whose folders name the classes."""
    rows: list[Row] = []
    srs, schema, foreign = None, None, []
    for index in range(ds.GetLayerCount()):
        layer = ds.GetLayer(index)
        code = parse_code(layer.GetName())
        if code is None or layer.GetName().strip().isdigit() and int(layer.GetName()) > 10:
            if layer.GetFeatureCount() and not _is_roi_folder(layer):
                foreign.append(layer.GetName())
            continue
        srs = srs or layer.GetSpatialRef()
        schema = schema or _schema(layer)  # every folder of a KML has the same fields
        rows += [_row(feature, code, schema) for feature in layer]
    if foreign:
        raise TrainingAreaError(f"KML folder(s) {', '.join(repr(f) for f in foreign)} are not LCZ classes: a "
                                "WUDAPT KML has one folder per class named 1–10 and A–G (plus the ROI).")
    return rows, srs, schema


def _read_class_field(layer: ogr.Layer,
                      class_field: str | None) -> tuple[list[Row], osr.SpatialReference | None, Schema]:
    """(rows of ``_row``, srs, schema) of a vector layer whose ``class_field`` (guessed among
    ``CLASS_FIELD_GUESSES`` if None) holds the LCZ."""
    fields = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    name = class_field or next((f for f in CLASS_FIELD_GUESSES if f in fields), None)
    if name not in fields:
        raise TrainingAreaError(f"The training areas have no class field {class_field or '(lcz/class)'}; "
                                f"their fields are {', '.join(fields) or 'none'}. Name the field holding the LCZ.")
    schema, rows, unknown = _schema(layer), [], set[str]()
    for feature in layer:
        code = parse_code(feature.GetField(name))
        if code is None:
            unknown.add(str(feature.GetField(name)))
        else:
            rows.append(_row(feature, code, schema))
    if unknown:
        raise TrainingAreaError(f"Unknown LCZ class value(s) in field '{name}': {', '.join(sorted(unknown))}. "
                                "Use 1–17, 101–107 (WUDAPT-2015 A–G) or the letters A–G.")
    return rows, layer.GetSpatialRef(), schema


def read_training_areas(path: Path | str, class_field: str | None = None,
                        layer_name: str | None = None) -> TrainingAreas:
    """Read TAs from ``path``: a vector layer with ``class_field`` (guessed among lcz/class/… if None), or a
    WUDAPT KML/KMZ whose folders name the classes.

    Raises TrainingAreaError for an unreadable file, a missing class field, unknown class values or foreign
    KML folder names (each listed), or no polygons at all.
    """
    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    except RuntimeError as error:
        raise TrainingAreaError(f"Cannot open the training areas {path}: {error}") from None
    if ds.GetDriver().ShortName in ("KML", "LIBKML") and class_field is None:
        rows, srs, schema = _read_kml_folders(ds)
    else:
        rows, srs, schema = _read_class_field(ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0),
                                              class_field)
    polygons = [(g, c, a) for g, c, a in rows
                if g is not None and ogr.GT_Flatten(g.GetGeometryType()) in (ogr.wkbPolygon, ogr.wkbMultiPolygon)]
    if not polygons:
        raise TrainingAreaError(f"{path} holds no LCZ training polygons.")
    if srs is None:
        raise TrainingAreaError(f"{path} has no CRS.")
    srs = srs.Clone()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    for geometry, _, _ in polygons:
        geometry.FlattenTo2D()
    return TrainingAreas([g for g, _, _ in polygons], [c for _, c, _ in polygons], srs, schema or [],
                         [a for _, _, a in polygons])
