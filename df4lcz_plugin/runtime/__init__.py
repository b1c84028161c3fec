"""The ground floor every room stands on: the dependency installer, the device, the asset loader, feedback and
kill points, the output grid, safe outputs, folder locks and in-memory OGR sources. It imports no other room."""
