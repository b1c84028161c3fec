"""Write outputs under a temporary name and rename them only when complete."""

import contextlib
import os
import tempfile
from pathlib import Path

#: GDAL writes category names and statistics of a GeoTIFF into this sidecar (PAM).
AUX_SUFFIX = ".aux.xml"


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path`` (same extension); on success rename it (and its ``.aux.xml``)
    to ``path``; on any error remove them, leaving no half-written file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    os.remove(tmp)  # GDAL creates the file itself
    tmp_aux = tmp + AUX_SUFFIX
    try:
        yield tmp
        final_aux = str(path) + AUX_SUFFIX
        if os.path.exists(tmp_aux):
            os.replace(tmp_aux, final_aux)
        elif os.path.exists(final_aux):
            os.remove(final_aux)  # a stale sidecar would relabel the new raster
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp_aux):
            if os.path.exists(leftover):
                os.remove(leftover)
