"""The engine's command line, without QGIS: ``python3 -m df4lcz_plugin classify SENTINEL2 OUTPUT [options]``, or
``classify --stac API --extent … --start … --end … OUTPUT`` to map from Sentinel-2 fetched from a STAC API.

Without ``--workers`` or ``--scheduler`` it runs ``classify.classify`` in this process, exactly as
``df4lcz:classifylcz`` does; with them the same function has its tiles computed on a Dask cluster
(``dask_tiles.DaskTiles``): a LocalCluster of N worker processes, or the workers of a running ``dask-scheduler``.
With ``--stac`` the fetch is planned here (search, SCL screening, dates, budget: ``fetch.plan_fetch``, as
``df4lcz:sentinel2fetch`` plans it); in this process the stack is then fetched into a scratch folder beside OUTPUT
and classified, and on a cluster each tile's task fetches its own part of it from the COGs (``dask_tiles``), so no
input file is shared. A run on a cluster holds the lock of its work folder (``folder_lock``), so that a second run
on it is refused.
Bad arguments and unusable inputs (a work folder another run is using included) exit with status 2 and the
reason; failed tiles (``dask_tiles.TileError``) or an unreadable raster with 1, a SIGTERM with 143.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import re
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Optional, TextIO, Union

from osgeo import gdal

from .lcz import legend
from .mapping.classify import classify
from .mapping.settings import ClassifySettings
from .sentinel2.clouds import MAX_CLOUD_PERCENT
from .mapping.dask_tiles import RETRIES, DaskTiles
from .runtime.device import DeviceError, resolve_device
from .runtime.feedback import Feedback, TileStatus
from .runtime.folder_lock import Busy, FolderLock, LockError
from .runtime.grid import GridError
from .models.backends import BACKENDS, PRECISIONS, BackendError
from .models.registry import ModelCard, ModelError, list_models, model_files, read_card
from .runtime.outputs import OutputPathError, check_output_paths, geotiff_output
from .sentinel2.stack import built_from
from .sentinel2.checks import InputError
from .sentinel2.cog_windows import WindowCache
from .sentinel2.fetch import (MODES, FetchPlan, FetchRequest, check_outside_cache, fetch_plan, grid_template,
                              plan_fetch)
from .sentinel2.stac import STAC_APIS, FetchError, resolve_api
from .runtime.outputs import scratch_folder
from .mapping.tile_store import WorkDirError, check_work_dir

gdal.UseExceptions()

#: Errors that mean the arguments or the inputs cannot be classified: exit status 2, as argparse's own.
USAGE_ERRORS = (OutputPathError, ModelError, InputError, GridError, DeviceError, BackendError, WorkDirError,
                FetchError)

EPILOG = """\
examples:
  # in this process, as df4lcz:classifylcz does
  python3 -m df4lcz_plugin classify stack.tif lcz.tif --extent 437000 4170000 442000 4175000
  # a region: a VRT mosaic of several stacks, on 4 local worker processes
  gdalbuildvrt region.vrt stack_*.tif
  python3 -m df4lcz_plugin classify region.vrt lcz.tif --workers 4 --work-dir lcz_tiles
  # on a cluster: every worker sees the files at the same paths
  python3 -m df4lcz_plugin classify /shared/region.vrt /shared/lcz.tif --scheduler tcp://head:8786
  # Sentinel-2 L2A from Earth Search: the clearest 3 dates of a summer, per tile on 4 workers (extent in lon/lat)
  python3 -m df4lcz_plugin classify --stac earth-search --extent 8.45 47.33 8.62 47.43 \\
      --start 2024-06-01 --end 2024-08-31 lcz.tif --workers 4

A killed run, started again with the same arguments and work folder, computes only the missing tiles.
"""


class ConsoleFeedback(Feedback):
    """Messages on stderr. On a terminal, a progress bar (tqdm) of cells with tiles done and cells/s; in a log,
    one line per tile."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream: TextIO = stream
        self.bar: Any = None  # a tqdm bar while tiles are being computed on a terminal

    def info(self, text: str) -> None:
        self._write(text)

    def warning(self, text: str) -> None:
        self._write(f"Warning: {text}")

    def _write(self, text: str) -> None:
        if self.bar is None:
            print(text, file=self.stream, flush=True)
        else:
            self.bar.write(text, file=self.stream)  # above the bar

    def tile_done(self, status: TileStatus) -> None:
        if not self.stream.isatty():
            super().tile_done(status)
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=status.cells_total, initial=status.cells_done - status.cells, unit=" cells",
                            file=self.stream, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} cells [{elapsed}<"
                                                         "{remaining}{postfix}]")
        self.bar.update(status.cells)
        self.bar.set_postfix_str(f"{status.done}/{status.tiles} tiles, {status.rate:,.0f} cells/s")
        if status.done == status.tiles:
            self.bar.close()
            self.bar = None


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number ≥ ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not a whole number ≥ {minimum}")
        return value

    parse.__name__ = "whole number"  # argparse's word for a value int() cannot read
    return parse


def _device(text: str) -> str:
    """An argparse type: auto, cpu, cuda or cuda:N, in lower case."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"'{text}' is not auto, cpu, cuda or cuda:N")
    return text.strip().lower()


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(the program's parser, its ``classify`` sub-parser)."""
    parser = argparse.ArgumentParser(prog="python3 -m df4lcz_plugin",
                                     description="The DF4LCZ engine on the command line (QGIS is not needed).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ids = ", ".join(card.id for card in list_models()) or "none installed"
    run = commands.add_parser(
        "classify", help="map local climate zones from a Sentinel-2 stack or mosaic",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Map local climate zones (LCZ) from the Sentinel-2 stream of a model: the styled LCZ GeoTIFF "
                    "(colour table, class names, .qml) of df4lcz:classifylcz, and optionally its probabilities. "
                    "The extent is split into tiles of the output grid; without --workers or --scheduler they "
                    "are computed here, with them on a Dask cluster, and the map is identical. VHR fusion and "
                    "the decision-source raster are not offered here: use df4lcz:classifylcz in QGIS for them.")
    run.add_argument("paths", metavar="[SENTINEL2] OUTPUT", type=Path, nargs="+",
                     help="SENTINEL2: the 10-band Sentinel-2 stack (GeoTIFF, as df4lcz:sentinel2stack writes it), or "
                          "a VRT mosaic of several stacks in one CRS (gdalbuildvrt); left out with --stac. OUTPUT: the "
                          "LCZ GeoTIFF to write (.tif), with its .qml")
    run.add_argument("--extent", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                     help="area to map, in the raster's CRS (default: the whole raster); with --stac, required, in "
                          "--extent-crs")
    run.add_argument("--resolution", type=float, default=100.0, help="output cell size in metres (default 100)")
    run.add_argument("--model", metavar="ID|FILE",
                     help=f"an installed model's id ({ids}; default the first) or a model file (.json card or "
                          ".safetensors weights)")
    run.add_argument("--device", type=_device, default="auto",
                     help="auto, cpu, cuda or cuda:N (default auto: a GPU if there is one); on a cluster each "
                          "worker resolves it on its own machine")
    run.add_argument("--probabilities", metavar="PATH", type=Path,
                     help="also write the 18-band probability GeoTIFF in percent (.tif)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_whole(1), metavar="N",
                       help="run the tiles on a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the tiles on the workers of a running dask-scheduler (e.g. tcp://head:8786)")
    run.add_argument("--work-dir", type=Path, metavar="DIR",
                     help="folder of the finished tiles and their manifest, for resuming (with --workers or "
                          "--scheduler; default: OUTPUT with the suffix .tiles); emptied after success")
    run.add_argument("--threads", type=_whole(1), metavar="N",
                     help="CPU inference threads per worker (default: the cores divided by --workers; with "
                          "--scheduler, all the worker machine's cores)")
    run.add_argument("--tile-cells", type=_whole(1), metavar="N",
                     help="output cells per tile side, one task each (default and largest: 64 at 100 m)")
    run.add_argument("--retries", type=_whole(0), default=RETRIES,
                     help=f"retries of a tile whose task failed (default {RETRIES})")
    run.add_argument("--batch-size", type=_whole(1), default=128, help="patches per inference batch")
    run.add_argument("--max-cloud", type=float, default=MAX_CLOUD_PERCENT,
                     help=f"most masked pixels (%%) in a cell's patch (default {MAX_CLOUD_PERCENT:g})")
    run.add_argument("--backend", choices=BACKENDS, default="auto", help="default auto: OpenVINO on CPU")
    run.add_argument("--precision", choices=PRECISIONS, default="f32", help="OpenVINO precision (default f32)")
    run.add_argument("--palette", choices=list(legend.PALETTE_TITLES), default="official_2022")
    run.add_argument("--tta", action="store_true",
                     help="test-time augmentation: average over the 8 flips and rotations of each patch (8× the time)")
    _stac_arguments(run)
    return parser, run


def _iso_date(text: str) -> dt.date:
    """An argparse type: an ISO date (YYYY-MM-DD)."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an ISO date (YYYY-MM-DD)") from None


def _stac_arguments(run: argparse.ArgumentParser) -> None:
    """The options of ``--stac``, with ``df4lcz:sentinel2fetch``'s defaults."""
    stac = run.add_argument_group("Sentinel-2 from a STAC API instead of SENTINEL2 (as df4lcz:sentinel2fetch)")
    stac.add_argument("--stac", metavar="API", help=f"{', '.join(STAC_APIS)}, or a STAC API URL")
    stac.add_argument("--collection", default="", help="default: the API's Sentinel-2 L2A collection")
    stac.add_argument("--extent-crs", default="EPSG:4326", metavar="CRS",
                      help="CRS of --extent (default EPSG:4326, longitude and latitude); the map is in the extent's "
                           "UTM zone")
    stac.add_argument("--start", type=_iso_date, metavar="DATE", help="first acquisition date (YYYY-MM-DD)")
    stac.add_argument("--end", type=_iso_date, metavar="DATE", help="last acquisition date (YYYY-MM-DD)")
    stac.add_argument("--max-scene-cloud", type=float, default=50.0, help="largest scene cloud cover, %% (default 50)")
    stac.add_argument("--cloud-mask", choices=MODES, default="scl", help="default scl")
    stac.add_argument("--max-dates", type=_whole(1), default=3, help="clearest dates to combine (default 3)")
    stac.add_argument("--min-clear", type=float, default=50.0,
                      help="smallest clear share of the extent per date, %% (default 50)")
    stac.add_argument("--max-download-mb", type=float, default=1000.0,
                      help="refuse a fetch expected to download more (default 1000)")


def _stac_request(args: argparse.Namespace) -> FetchRequest:
    """The FetchRequest of the ``--stac`` options. Raises FetchError, InputError."""
    missing = [f"--{name}" for name in ("extent", "start", "end") if getattr(args, name) is None]
    if missing:
        raise InputError(f"--stac needs {', '.join(missing)}: the area (in --extent-crs) and the dates to search.")
    if args.end < args.start:
        raise InputError(f"--end {args.end} is before --start {args.start}.")
    return FetchRequest(api=resolve_api(args.stac, args.collection.strip(), "--stac"), extent=tuple(args.extent),
                        extent_crs=args.extent_crs, start=args.start, end=args.end,
                        max_scene_cloud=args.max_scene_cloud, cloud_mask=args.cloud_mask, max_dates=args.max_dates,
                        min_clear=args.min_clear, max_download_mb=args.max_download_mb,
                        proxy=os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY"))


def _model(spec: Optional[str]) -> ModelCard:
    """The ModelCard ``--model`` names: an installed id, or a model file. Raises ModelError."""
    cards = list_models()
    if spec is None:
        if not cards:
            raise ModelError("No LCZ model is installed; give --model FILE (a .json card or .safetensors weights).")
        return cards[0]
    for card in cards:
        if card.id == spec:
            return card
    if Path(spec).suffix.lower() in (".json", ".safetensors"):
        return read_card(Path(spec).absolute())  # absolute: Dask workers run in folders of their own
    installed = ", ".join(card.id for card in cards) or "none installed"
    raise ModelError(f"--model {spec} is neither an installed model's id ({installed}) nor a model file (.json or "
                     ".safetensors).")


def _paths(args: argparse.Namespace) -> None:
    """Set ``args.sentinel2`` (None with --stac) and ``args.output`` from the positional paths."""
    wanted = 1 if args.stac else 2
    if len(args.paths) != wanted:
        raise InputError("give OUTPUT alone with --stac" if args.stac else
                         "give SENTINEL2 and OUTPUT (or --stac API with OUTPUT alone)")
    args.sentinel2, args.output = (None, args.paths[0]) if args.stac else args.paths


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    """{name: files} of the Sentinel-2 input (none with --stac), checked to exist and open."""
    if args.stac:
        return {}
    sentinel2 = args.sentinel2 = args.sentinel2.absolute()
    if not sentinel2.is_file():
        raise InputError(f"SENTINEL2 {args.sentinel2} does not exist; give a 10-band Sentinel-2 GeoTIFF or VRT.")
    try:
        files = gdal.Open(str(sentinel2)).GetFileList() or [sentinel2]
    except RuntimeError as error:
        raise InputError(f"Cannot open SENTINEL2 {args.sentinel2}: {error}") from None
    return {"SENTINEL2": files, "SENTINEL2 (what it was built from)": built_from(sentinel2)}


def _check(args: argparse.Namespace) -> tuple[ModelCard, ClassifySettings, Optional[Path]]:
    """Refuse unusable arguments before anything runs: returns (ModelCard, settings, work dir). Paths are made
    absolute: Dask workers run in folders of their own."""
    _paths(args)
    args.output = args.output.absolute()
    args.probabilities = args.probabilities.absolute() if args.probabilities else None
    inputs = _inputs(args)
    card = _model(args.model)
    check_output_paths({**inputs, "--model": model_files(card.path)},
                       {"OUTPUT": geotiff_output(args.output, style=True),
                        "--probabilities": geotiff_output(args.probabilities, style=True)})
    distributed = args.workers or args.scheduler
    work_dir = (args.work_dir or args.output.with_suffix(".tiles")).absolute() if distributed else None
    if work_dir is None:
        for option in ("work_dir", "threads"):
            if getattr(args, option) is not None:
                raise WorkDirError(f"--{option.replace('_', '-')} is for a run on a cluster; add --workers N or "
                                   "--scheduler ADDRESS, or leave it out.")
    return card, _settings(args), work_dir


def _settings(args: argparse.Namespace) -> ClassifySettings:
    """The ClassifySettings of the options. On a cluster each worker resolves the device on its own machine, and
    --threads defaults to the cores divided by --workers (0 with --scheduler: the back-end's default, all the
    worker machine's cores); here the device must exist now. Raises DeviceError, InputError."""
    if args.workers:
        device, threads = args.device, args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    else:
        device, threads = args.device if args.scheduler else resolve_device(args.device), args.threads or 0
    return ClassifySettings(resolution=args.resolution, device=device, backend=args.backend,
                            precision=args.precision, batch_size=args.batch_size, threads=threads,
                            tile_size=args.tile_cells, max_cloud=args.max_cloud, tta=args.tta, palette=args.palette)


def _work_dir_lock(work_dir: Path, feedback: Feedback) -> contextlib.AbstractContextManager:
    """The lock of ``work_dir`` (``folder_lock``), taken: one run at a time per work folder. A lock left by a run
    that is gone is taken over. Raises WorkDirError, having written and deleted nothing, while another run holds
    it; where the file system offers no locks, warns and goes on unlocked (a context manager doing nothing)."""
    try:
        return FolderLock(work_dir)
    except Busy as busy:
        holder = busy.holder
        stop = f"stop it with 'kill {holder.pid}' (on {holder.host})" if holder else "stop it"
        raise WorkDirError(f"Another run is using the work folder {work_dir}: {holder or 'it has just started'}. "
                           f"Wait for it to end, or {stop}, then run this command again. Nothing was written or "
                           "deleted.") from None
    except LockError as error:
        feedback.warning(f"{error} Nothing keeps another run out of {work_dir}: start one run at a time on it.")
        return contextlib.nullcontext()


@contextlib.contextmanager
def _executor(args: argparse.Namespace, work_dir: Optional[Path], feedback: Feedback) -> Iterator[Optional[DaskTiles]]:
    """None (tiles computed here), or DaskTiles on a LocalCluster (--workers) or a scheduler's cluster, holding
    the work folder's lock (``_work_dir_lock``) until it is left. Raises WorkDirError."""
    if work_dir is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(_work_dir_lock(work_dir, feedback))  # first: a second run is refused at once
        check_work_dir(work_dir)  # under the lock: no other run is half-way through writing or emptying it
        import logging

        from distributed import Client, LocalCluster

        if args.scheduler:
            try:
                client = stack.enter_context(Client(args.scheduler, timeout="10s"))
            except (OSError, ValueError, TypeError) as error:  # unreachable, or not an address (no port…)
                raise WorkDirError(f"Cannot reach the Dask scheduler at {args.scheduler} ({error}); give its "
                                   "address as printed by 'dask scheduler', e.g. tcp://head:8786.") from None
        else:
            # The workers' own logs stay quiet: a failed tile is reported once, at the end, by its extent.
            cluster = stack.enter_context(LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                       silence_logs=logging.CRITICAL))
            client = stack.enter_context(Client(cluster))
        yield DaskTiles(client, work_dir, args.retries)


@contextlib.contextmanager
def _stac_input(args: argparse.Namespace, feedback: Feedback,
                distributed: bool) -> Iterator[tuple[Union[str, Path], FetchPlan]]:
    """(the Sentinel-2 raster to classify, the fetch plan it comes from) as the ``--stac`` options say: planned
    here; on a cluster (``distributed``) the raster is the plan's grid template and each tile's task fetches its
    part; here it is fetched into a scratch folder beside OUTPUT, removed when the block ends."""
    cache = WindowCache()
    check_outside_cache(cache, args.output, args.probabilities)
    plan, jobs = plan_fetch(_stac_request(args), cache, feedback)
    if distributed:
        yield grid_template(plan), plan
        return
    with scratch_folder(args.output) as scratch:
        stack = Path(scratch) / "sentinel2.tif"
        fetch_plan(plan, jobs, stack, cache, feedback)
        yield stack, plan


def _classify(args: argparse.Namespace, run: Callable[..., dict[str, Any]], feedback: Feedback,
              distributed: bool) -> dict[str, Any]:
    """``run`` (classify with the other options) on SENTINEL2, or on Sentinel-2 fetched as the ``--stac`` options
    say (``_stac_input``), with the fetched dates in the summary."""
    if not args.stac:
        return run(args.sentinel2, args.output, bounds=args.extent)
    with _stac_input(args, feedback, distributed) as (sentinel2, plan):
        summary = run(sentinel2, args.output, bounds=plan.extent, stac_plan=plan)
    return dict(summary, dates=plan.metadata["DATES"].split(","))


def _terminated(signum: int, frame: Optional[FrameType]) -> None:
    # A SIGTERM unwinds like an exception, so the cluster's workers are stopped and partial files removed.
    raise SystemExit(128 + signum)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser, classify_parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    feedback, work_dir, summary = ConsoleFeedback(), None, None
    try:
        card, settings, work_dir = _check(args)
        with _executor(args, work_dir, feedback) as executor:
            run = functools.partial(classify, model=card, settings=settings, probabilities_path=args.probabilities,
                                    feedback=feedback, executor=executor)
            summary = _classify(args, run, feedback, executor is not None)
            if executor is not None:
                executor.clear()
    except USAGE_ERRORS as error:
        classify_parser.error(str(error))  # exits with status 2
    except RuntimeError as error:  # failed tiles (TileError), or GDAL failing to read a damaged input
        print(f"{classify_parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as stop:
        return _stopped(stop, classify_parser.prog, summary is not None, work_dir)
    print(json.dumps(summary))
    return 0


def _stopped(stop: Union[KeyboardInterrupt, SystemExit], prog: str, written: bool, work_dir: Optional[Path]) -> int:
    """The exit status of a run stopped by ``stop`` (Ctrl-C, or SIGTERM's SystemExit), having said on stderr what is
    left: the map if ``written``, and the finished tiles in ``work_dir``. Re-raises any other SystemExit."""
    if isinstance(stop, SystemExit) and stop.code != 128 + signal.SIGTERM:
        raise stop
    interrupted = isinstance(stop, KeyboardInterrupt)
    stopped = f"{prog}: {'interrupted' if interrupted else 'terminated'}"
    if written:  # stopped while emptying the work folder: the map is complete
        print(f"{stopped} after the map was written; {work_dir} was not emptied: delete it, or run the same "
              "command again", file=sys.stderr)
    else:
        print(f"{stopped}; no map was written" + (f", finished tiles are kept in {work_dir}: run the same "
                                                  "command again to resume" if work_dir else ""), file=sys.stderr)
    return 130 if interrupted else 128 + signal.SIGTERM
