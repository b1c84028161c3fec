"""The in-memory OGR driver per GDAL version: 'MEM' from GDAL 3.11 on ('Memory' is deprecated there), 'Memory'
before (bookworm's GDAL 3.6, trixie's 3.10)."""

from osgeo import gdal, ogr

from df4lcz_plugin.runtime import ogr_memory


def test_the_driver_of_this_gdal_holds_a_polygon_layer():
    assert ogr_memory.DRIVER == ("MEM" if int(gdal.VersionInfo()) >= 3110000 else "Memory")
    source = ogr_memory.memory_datasource()
    layer = source.CreateLayer("t", None, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON ((0 0, 1 0, 1 1, 0 0))"))
    assert layer.CreateFeature(feature) == 0 and layer.GetFeatureCount() == 1
