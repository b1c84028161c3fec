"""Everything about Sentinel-2 input: band names and the So2Sat order (``bands``), the 10-band stack from a product
folder (``stack``), the checks that a stack is what the models read (``checks``), cloud masks (``clouds``) and the
median composite of several dates (``composite``)."""
