"""DF4LCZ's high-resolution stream, one module a step (``shared/design/df4lcz_method.md`` §2):

- ``imagery``: VHR imagery checks and the 320 × 320 px (1 m) RGB patch of a footprint (GDAL warp);
- ``sam``: Segment Anything masks of a patch with the paper's AMG settings (exact fast path, fast SAM opt-in);
- ``sam_decoder``: the exact fast path's mask decoder (the library's masks with a fraction of its work);
- ``sam_tiles``: shared segmentation, SAM once per 320 m tile of a fixed grid, footprints composed from tiles;
- ``graph``: the object graph of a patch's masks (node features, adjacency, the graph rule);
- ``graph_cache``: graphs and SAM tiles on disk, keyed by imagery, footprint and graph rule;
- ``objects``: objects over an extent as polygons, and graph files (``df4lcz:buildobjectgraphs``);
- ``stream``: footprints → graphs → the GCN's probabilities, in chunks (``classify``, ``train``).

The GCN itself is ``models.gcn``, beside the other networks.
"""
