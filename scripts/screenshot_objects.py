"""Screenshot of SAM objects over the orthophoto from the QGIS desktop, for the documentation (docs/).

Run under Xvfb: ``xvfb-run -s "-screen 0 1400x1000x24" qgis --nologo --code scripts/screenshot_objects.py``
with ``DF4LCZ_SHOT`` = "ORTHO.tif;OBJECTS.gpkg;OUT.png" (set by the caller).
"""

import os

from qgis.core import QgsFillSymbol, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

ortho, objects, png = os.environ["DF4LCZ_SHOT"].split(";")
project = QgsProject.instance()
raster = QgsRasterLayer(ortho, "SWISSIMAGE 0.5 m (© swisstopo)")
vector = QgsVectorLayer(objects, "SAM objects (MobileSAM, paper AMG settings)", "ogr")
if not vector.isValid() or not raster.isValid():
    raise SystemExit(f"cannot open {objects} or {ortho}")
vector.renderer().setSymbol(QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "255,230,0,255",
                                                        "outline_width": "0.5"}))
project.addMapLayer(raster)
project.addMapLayer(vector)  # added last: drawn on top
canvas = iface.mapCanvas()
canvas.setExtent(raster.extent())


def save():
    canvas.saveAsImage(png)
    os._exit(0)  # the desktop's exit path asks questions; nothing is left to save


canvas.mapCanvasRefreshed.connect(lambda: QTimer.singleShot(1000, save))
QTimer.singleShot(3000, canvas.refreshAllLayers)
