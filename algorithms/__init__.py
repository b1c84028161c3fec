"""QGIS side of DF4LCZ: the Processing provider and thin algorithms over the ``df4lcz_plugin`` engine."""
