"""The LCZ domain: the one legend, LCZ rasters, urban canopy parameters, the global LCZ map and the LCZ
Generator's filter."""
