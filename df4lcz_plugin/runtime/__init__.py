"""The ground floor every room stands on: the dependency installer, the device, the asset loader, feedback and
kill points, the output grid, safe outputs, folder locks, in-memory OGR sources and PyTorch's own BLAS inside
QGIS. It imports no other room."""
