"""In-memory OGR data sources. GDAL 3.11 merged the vector 'Memory' driver into 'MEM' and deprecated 'Memory';
before 3.11 (bookworm's GDAL 3.6, trixie's 3.10) 'MEM' is raster-only."""

from osgeo import gdal, ogr

#: The in-memory vector driver of this GDAL, chosen once by what 'MEM' can do.
DRIVER = "MEM" if gdal.GetDriverByName("MEM").GetMetadataItem(gdal.DCAP_VECTOR) == "YES" else "Memory"


def memory_datasource() -> ogr.DataSource:
    """A new, empty in-memory OGR data source; keep it referenced while its layers are used (GDAL bindings)."""
    return ogr.GetDriverByName(DRIVER).CreateDataSource("")
