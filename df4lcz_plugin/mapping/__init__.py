"""Mapping: the classification of an extent, tile by tile (classify) with its settings (settings), the
decision-level fusion of the two streams, the map writer, the tile store and its Dask scale-out, and the average of
several dates."""
