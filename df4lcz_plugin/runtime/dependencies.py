"""The plugin's private Python dependencies: where they live, which are missing, and the one installer.

Two variants, each pinned per Python and platform in ``requirements/`` (shipped with the plugin):

- ``light``: OpenVINO, safetensors, lightgbm + scipy + narwhals, Dask, pystac-client + pystac-core. Enough for the
  Sentinel-2 stack and composites (s2cloudless cloud masks), for searching Sentinel-2 on STAC APIs, for classifying
  on the CPU with a Sentinel-2-only model whose OpenVINO form is built (the shipped model's is), and for the command
  line on a Dask cluster. About 100 MB.
- ``full``: light plus PyTorch and what rests on it (CUDA, SAM,
  torch-geometric): GPU inference, VHR fusion, object graphs, training. About 5 GB.

Their direct dependencies and the versions wanted are ``requirements/light.in`` and ``full.in``; uv's resolver
(``scripts/compile_pins.py``) turns them into the sets ``requirements/py3XX/<variant>-<platform>.txt`` (``pin_file``),
each the whole closure without numpy, wheels only: QGIS's own numpy is used, and nothing is built from source.
A package counts as present (``lacking``) when the dependency folder holds its pinned version, or, when the folder
holds none of it, when QGIS's own Python has a version within the input file's range (the exact pin for the
closure's other packages): Debian's python3-scipy, for example.

For ``full`` the PyTorch build may be chosen where the package index offers a choice (``TORCH_BUILDS``); the
default is the registry's own PyTorch.

They are installed with ``pip --no-deps --only-binary :all: --target`` into ``<plugin>/.deps/py<XY>`` (never into
QGIS's own Python), which the plugin puts first on
``sys.path`` before anything imports them. Each package is installed by its own pip run into a staging folder and
then moved in, its ``.dist-info`` last: a package counts as installed (``installed``, ``missing``) only once whole,
so an interrupted install leaves nothing half-installed and the next one finishes the job. One installer at a time
uses a folder (``.deps/.lock-py<XY>``, held by the installer and its pip). ``remove`` first renames the folder aside
(``.deps/.trash-py<XY>``), so an interrupted removal leaves the whole folder or a part of the renamed one, which the
next removal deletes. Command line, run from the plugin folder with the Python QGIS uses (``find_python``)::

    python3 -m df4lcz_plugin.runtime.dependencies install --variant light|full [--torch BUILD] [--target DIR]
    python3 -m df4lcz_plugin.runtime.dependencies remove [--target DIR]
    python3 -m df4lcz_plugin.runtime.dependencies missing --variant light|full [--target DIR]

``install`` prints ``[done/total] …`` lines (``PROGRESS``) between pip's own messages; SIGTERM or Ctrl+C stops it
cleanly (exit status 2). The QGIS dialog (``algorithms/install_dialog.py``) runs this same command. This module
imports nothing from QGIS, so the command runs outside QGIS too.
"""

import argparse
import contextlib
import csv
import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, NamedTuple, cast

from .folder_lock import Busy, FolderLock, LockError

PLUGIN_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = PLUGIN_ROOT / "requirements"
#: The variants; ``<variant>.in`` in REQUIREMENTS lists each one's direct dependencies.
VARIANTS = ("light", "full")
#: sys.platform → (the pin files' platform name, the machine (platform.machine()) their wheels are for).
PLATFORMS = {"linux": ("linux", "x86_64"), "win32": ("windows", "AMD64"), "darwin": ("macos", "arm64")}
#: Packages older sets installed and the plugin no longer wants; ``install`` deletes them from its folder
#: (openvino-telemetry sends usage analytics; OpenVINO works without it).
WITHDRAWN = ("openvino-telemetry",)
#: Variant → {import name: what to tell the user it is}; full needs light's too.
MODULES = {
    "light": {"openvino": "OpenVINO", "safetensors": "safetensors", "lightgbm": "LightGBM", "scipy": "SciPy",
              "narwhals": "narwhals", "dask": "Dask", "distributed": "Dask distributed",
              "pystac_client": "pystac-client", "pystac": "PySTAC"},
    "full": {"torch": "PyTorch", "torchvision": "torchvision", "segment_anything": "Segment Anything",
             "mobile_sam": "MobileSAM", "timm": "timm", "cv2": "OpenCV", "torch_geometric": "PyTorch Geometric"},
}
#: Import name → the pinned distribution providing it, where the two differ.
_DISTRIBUTIONS = {"cv2": "opencv-python-headless", "segment_anything": "segment-anything",
                  "mobile_sam": "mobilesam-mirror", "torch_geometric": "torch-geometric", "pystac": "pystac-core"}


#: Where QGIS users find the installer: the plugin's entry in the Plugins menu.
MENU, INSTALL_ENTRY = "DF4LCZ", "Install dependencies…"
_PYTORCH_INDEX = "https://download.pytorch.org/whl/"
#: sys.platform → the PyTorch builds the package indexes offer there: build → index serving it (None: the registry
#: pip is configured with); the first is the default. PyPI's Linux wheels use CUDA (from separate nvidia-* wheels),
#: its Windows wheels are CPU-only, and macOS has one build (CPU and Apple's MPS).
TORCH_BUILDS: dict[str, dict[str, str | None]] = {
    "linux": {"cuda": None, "cpu": _PYTORCH_INDEX + "cpu"},
    "win32": {"cpu": None, "cuda": _PYTORCH_INDEX + "cu130"},  # CUDA 13.0, as PyPI's Linux wheels of the pin
    "darwin": {"cpu": None},
}
#: The packages built per PyTorch flavour; an index other than the registry's tags their versions (``+cpu``).
_TORCH_PACKAGES = ("torch", "torchvision")
#: One package to install: version as its dist-info names it; index None = the registry's. (A field named index
#: shadows tuple.index, which the class form of NamedTuple refuses.)
Pin = NamedTuple("Pin", [("name", str), ("version", str), ("index", str | None)])
#: On Windows a console child of a GUI process would open a console window; this keeps it hidden.
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
#: The installer's progress lines: ``[done/total] text``.
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] ")


class InstallError(RuntimeError):
    """pip is missing or failed, no Python matching QGIS's was found, there is no pinned set for this Python, or a
    folder is not one this installer may delete."""


class Cancelled(Exception):
    """The installer was asked to stop (SIGTERM, Ctrl+C)."""


def deps_folder(plugin_root: Path | str) -> Path:
    """``<plugin_root>/.deps/py<major><minor>`` for the running Python."""
    return Path(plugin_root) / ".deps" / f"py{sys.version_info.major}{sys.version_info.minor}"


def activate(plugin_root: Path | str) -> Path | None:
    """Put the private dependency folder first on ``sys.path`` if it exists. Returns it (or None)."""
    folder = deps_folder(plugin_root)
    return use(folder) if folder.is_dir() else None


def use(folder: Path) -> Path:
    """Put ``folder`` (Path) first on ``sys.path`` and forget the import system's cached folder listings, so that
    what was just installed there can be found. Returns ``folder``."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return folder


@functools.cache  # an InstallError is not cached: the next call looks again
def find_python() -> str:
    """Path (str) of the Python interpreter QGIS runs on, to run pip and this module's command.

    Inside QGIS ``sys.executable`` is not to be trusted: embedded Python guesses it from PATH, where another Python
    (pyenv, conda) may come first. So candidates are looked for where QGIS's Python lives (``sys.exec_prefix``:
    Linux ``bin/python3.X``, OSGeo4W ``python3.exe``/``python.exe``, QGIS.app ``Contents/MacOS/bin/python3``), then
    ``sys.executable`` and ``python3.X``/``python3`` on PATH; each is run once (10 s at most). The first of this
    Python's version and ``sys.exec_prefix`` wins, else the first of its version (its pip installs the same wheels).
    Raises InstallError naming what was tried when none has the version. Found once per session (cached)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    executable, prefix = Path(sys.executable), Path(sys.exec_prefix)
    candidates = [prefix / "bin" / f"python{version}", prefix / "python3.exe", prefix / "python.exe",
                  executable.parent / "bin" / "python3", executable, shutil.which(f"python{version}"),
                  shutil.which("python3")]
    same_version = []
    for candidate in dict.fromkeys(str(c) for c in candidates if c):
        if Path(candidate).is_file() and Path(candidate).name.lower().startswith("python"):
            identity = _identity(candidate)
            if identity == (version, _normalised(sys.exec_prefix)):
                return candidate
            if identity and identity[0] == version:
                same_version.append(candidate)
    if same_version:
        return same_version[0]
    raise InstallError(f"No Python {version} interpreter (the version QGIS runs) was found in {prefix} or on PATH. "
                       f"Install Python {version} and its pip so that python{version} is on PATH, or run the "
                       "installer's command (python3 -m df4lcz_plugin.runtime.dependencies install …) with QGIS's Python "
                       "yourself.")


def _identity(python: str) -> tuple[str, str] | None:
    """('major.minor', normalised sys.exec_prefix) of the interpreter ``python``, or None if it does not run."""
    code = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.exec_prefix)"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=10,  # nosec B603
                             creationflags=NO_WINDOW)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.splitlines()
    return (lines[0], _normalised(lines[1])) if out.returncode == 0 and len(lines) == 2 else None


def _normalised(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def missing(variant: str, target: Path | str | None = None) -> list[str]:
    """Names of the packages ``variant`` lacks (``lacking``, for the PyTorch build that lacks fewest), those of
    ``MODULES`` first as it calls them, then the other pins'; empty when all are present. ``target``: the dependency
    folder (default: this plugin's). Raises InstallError when there is no set for this Python (``pin_file``)."""
    target = Path(target) if target else deps_folder(PLUGIN_ROOT)
    modules = dict(MODULES["light"], **(MODULES["full"] if variant == "full" else {}))
    humans = {_dist_name(_DISTRIBUTIONS.get(module, module)): human for module, human in modules.items()}
    names = min(([pin.name for pin in lacking(variant, build, target)] for build in torch_builds()), key=len)
    absent = {_dist_name(name) for name in names}
    return ([human for dist, human in humans.items() if dist in absent]
            + [name for name in names if _dist_name(name) not in humans])


def lacking(variant: str, torch: str | None, target: Path | str) -> list[Pin]:
    """The Pins of ``plan(variant, torch)`` not present for a Python using the dependency folder ``target``: a pin
    is present when ``target`` holds its version (its ``.dist-info``, which moves in last, so a package whose files
    were half moved in when its installer was killed is lacking), or, when ``target`` holds none of it, when QGIS's
    own Python (``sys.path`` without any plugin dependency folder) has a version that ``wanted`` accepts."""
    return [pin for pin in plan(variant, torch) if not installed(target, pin.name, pin.version)
            and (any(Path(target).glob(f"{_dist_name(pin.name)}-*.dist-info")) or not provided(variant, pin))]


def provided(variant: str, pin: Pin) -> str | None:
    """The version (str) of ``pin``'s package that QGIS's own Python (``sys.path`` without plugin dependency
    folders, and without a virtual environment's own folders: scripts/setup.sh runs this from the development
    venv, whose tools QGIS never sees) has, if ``variant`` accepts it in place of the pin: within
    ``requirements(variant)``'s range for a direct dependency, the pin's version for the others; else None."""
    _, specifiers = _packaging()
    path = [entry for entry in sys.path if not _is_deps_folder(Path(entry or ".")) and not _in_venv(entry)]
    found = next(iter(importlib.metadata.distributions(name=pin.name, path=path)), None)
    wanted = requirements(variant).get(_dist_name(pin.name), f"=={pin.version}")
    if found is not None and specifiers.SpecifierSet(wanted).contains(found.version, prereleases=True):
        return found.version
    return None


def _packaging() -> tuple[ModuleType, ModuleType]:
    """The ``packaging`` modules (requirements, specifiers): the installed one, else pip's own copy (before the
    light set, which has it, is installed)."""
    try:
        from packaging import requirements, specifiers
    except ImportError:
        from pip._vendor.packaging import requirements as pip_requirements, specifiers as pip_specifiers
        return pip_requirements, pip_specifiers
    return requirements, specifiers


def _in_venv(entry: str) -> bool:
    return sys.prefix != sys.base_prefix and Path(entry or ".").resolve().is_relative_to(Path(sys.prefix).resolve())


def _is_deps_folder(path: Path) -> bool:
    return path.parent.name == ".deps" and re.fullmatch(r"py\d+", path.name) is not None


@functools.cache  # the shipped input files do not change while QGIS runs
def requirements(variant: str) -> dict[str, str]:
    """{normalised name: specifier string} of ``variant``'s direct dependencies (``<variant>.in``, following ``-r``
    includes) whose environment markers hold for this Python: what ``lacking`` accepts from QGIS's own Python."""
    out: dict[str, str] = {}
    for line in _lines(REQUIREMENTS / f"{variant}.in"):
        requirement = _packaging()[0].Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            out[_dist_name(requirement.name)] = str(requirement.specifier)
    return out


def _lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file without comments, with its ``-r`` includes' lines."""
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out += _lines(path.parent / line[3:].strip())
        elif line:
            out.append(line)
    return out


def supported_pythons(platform: str = sys.platform) -> list[str]:
    """The Python versions ("3.11", …) that have pinned sets for ``platform`` (a sys.platform value)."""
    name = PLATFORMS.get(platform, (platform,))[0]
    return sorted((f"3.{p.name[3:]}" for p in REQUIREMENTS.glob("py3*") if (p / f"full-{name}.txt").is_file()),
                  key=lambda version: int(version[2:]))


def pin_file(variant: str, platform: str = sys.platform, python: str | None = None) -> Path:
    """The pin file (Path) of ``variant`` for ``python`` ("3.X", default: this one) on ``platform`` (a sys.platform
    value; for the running one, the machine counts too). Raises InstallError naming the supported Pythons and
    platforms when there is none."""
    import platform as platform_module

    python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    name, machine = PLATFORMS.get(platform, (None, None))
    path = REQUIREMENTS / f"py{python.replace('.', '')}" / f"{variant}-{name}.txt"
    running = platform == sys.platform and platform_module.machine() != machine
    if name is None or running or not path.is_file():
        versions = ", ".join(supported_pythons("linux"))
        here = f"Python {python} on {platform} {platform_module.machine() if platform == sys.platform else ''}"
        raise InstallError(f"DF4LCZ's dependencies are pinned (wheels only) for Python {versions} on Linux x86_64, "
                           f"Windows x86_64 and macOS 14+ on Apple silicon; this QGIS runs {here.strip()}, for "
                           "which there is no set. Use a QGIS release built on one of those Pythons (QGIS 3.22 to "
                           "3.44 and 4.x are).")
    return path


def install_advice(variant: str, lacking: list[str]) -> str:
    """What to tell a user whose Python lacks ``lacking`` (``missing``) of ``variant``: what and how to install."""
    shown = ", ".join(lacking[:8]) + (f" and {len(lacking) - 8} more packages" if len(lacking) > 8 else "")
    return (f"{shown} cannot be imported in QGIS's Python (not installed, or not completely), so this needs the "
            f"plugin's '{variant}' dependencies. Install them from QGIS with Plugins ▸ {MENU} ▸ {INSTALL_ENTRY} "
            f"(choose '{variant}'), or without QGIS: in the plugin folder {PLUGIN_ROOT}, run "
            f"'python3 -m df4lcz_plugin.runtime.dependencies install --variant {variant}' with the Python QGIS uses. "
            "Then restart QGIS.")


def pins(variant: str, platform: str = sys.platform) -> list[tuple[str, ...]]:
    """(name, version) of every ``name==version`` pin of ``variant`` for this Python on ``platform`` (``pin_file``;
    raises its InstallError)."""
    return [tuple(part.strip() for part in line.split("==")) for line in _lines(pin_file(variant, platform))]


def torch_builds(platform: str = sys.platform) -> dict[str, str | None]:
    """The PyTorch builds offered on ``platform`` (a ``sys.platform`` value): dict build → index URL or None
    (the registry's), the default first."""
    return TORCH_BUILDS.get(platform, {"cpu": None})


def plan(variant: str, torch: str | None = None, platform: str = sys.platform) -> list[Pin]:
    """The packages (list of Pin) that make ``variant`` on ``platform`` with the PyTorch build ``torch``
    (default: the platform's first). Only PyPI's Linux CUDA build loads CUDA from the nvidia-*/cuda-*/triton
    pins; the other builds bundle what they need or have no CUDA, so they skip those. Raises InstallError for a
    build the platform does not offer."""
    builds = torch_builds(platform)
    torch = torch or next(iter(builds))
    if torch not in builds:
        raise InstallError(f"There is no '{torch}' PyTorch build for {platform}; choose {' or '.join(builds)}.")
    index = builds[torch]
    out = []
    for name, version in pins(variant, platform):
        if name == "triton" or name.startswith(("nvidia-", "cuda-")):
            if torch == "cuda" and index is None:
                out.append(Pin(name, version, None))
        elif name in _TORCH_PACKAGES and index is not None:
            out.append(Pin(name, f"{version}+{index.rstrip('/').rsplit('/', 1)[1]}", index))
        else:
            out.append(Pin(name, version, None))
    return out


def _dist_name(name: str) -> str:
    """A project name as pip writes it in ``<name>-<version>.dist-info``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def installed(target: Path | str, name: str, version: str) -> bool:
    """True if ``target`` holds ``<normalised name>-<version>.dist-info`` (how pip names it)."""
    return (Path(target) / f"{_dist_name(name)}-{version}.dist-info").is_dir()


def staging_folder(target: Path | str) -> Path:
    """Where pip unpacks one package before it moves into ``target``: ``.deps/.staging-py<XY>``."""
    target = Path(target)
    return target.parent / f".staging-{target.name}"


def trash_folder(target: Path | str) -> Path:
    """Where ``remove`` renames ``target`` before deleting it: ``.deps/.trash-py<XY>``."""
    target = Path(target)
    return target.parent / f".trash-{target.name}"


def _locked(target: Path) -> FolderLock:
    """The lock of ``target`` (``folder_lock.FolderLock``: ``.deps/.lock-py<XY>``, an OS file lock, which ends with
    the process), taken, to hold while this installer uses ``target`` and its staging folder; its descriptor
    (``fd``) is inherited by the pip child (POSIX), so that a killed installer's pip still holds it. Raises
    InstallError, touching nothing, if another holds it or it cannot be taken."""
    try:
        return FolderLock(target)
    except Busy as busy:
        raise InstallError(f"Another installer, or the pip it started, is still using {target} (the installer: "
                           f"{busy.holder or 'not recorded yet'}); wait for it to end (or stop it), then try "
                           "again.") from None
    except LockError as error:
        raise InstallError(str(error)) from None


def pip_command(pin: Pin, staging: Path) -> list[str]:
    """The pip command line (list of str) that installs ``pin`` alone into ``staging`` with this Python:
    ``--no-deps`` (the pins are the whole closure), a wheel only (never a build from source), from ``pin.index``
    instead of the registry when it has one."""
    index = ["--index-url", pin.index] if pin.index else []
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--only-binary",
            ":all:", "--target", str(staging), *index, f"{pin.name}=={pin.version}"]


def install(variant: str, target: Path | str, torch: str | None = None) -> list[Pin]:
    """pip-install into ``target`` the packages of ``variant`` (``plan``) it lacks; returns them (list of Pin).

    A package present (``lacking``: in ``target``, or a fitting version in QGIS's own Python) is skipped, so a new
    pin costs one download, not a reinstall of PyTorch, and a complete folder costs nothing. ``WITHDRAWN``
    packages are deleted from ``target`` first. Each package is installed by its own pip run
    (``install_package``). Prints ``[done/total]`` progress lines and pip's output. Raises InstallError (pip missing
    or failing) or Cancelled (SIGTERM/SIGINT with ``stop_on_signals``); either way every package in ``target`` is
    whole.
    """
    target = Path(target)
    todo = lacking(variant, torch, target)
    _withdraw(target)
    for pin in plan(variant, torch):
        if pin not in todo and not installed(target, pin.name, pin.version):
            print(f"{pin.name} {provided(variant, pin)} of QGIS's own Python is used instead of the pinned "
                  f"{pin.version}.", flush=True)
    if not todo:
        print(f"The '{variant}' dependencies are all installed in {target}.", flush=True)
        return todo
    if importlib.util.find_spec("pip") is None:
        raise InstallError(f"{sys.executable} has no pip; install pip for it (Debian: apt install python3-pip).")
    print(f"[0/{len(todo)}] Installing {len(todo)} package(s) of the '{variant}' dependencies into {target}; "
          f"numpy is not among them: they use this Python's ({_numpy_version()}).", flush=True)
    for done, pin in enumerate(todo, 1):
        install_package(pin, target)
        print(f"[{done}/{len(todo)}] {pin.name}=={pin.version} installed.", flush=True)
    return todo


def _withdraw(target: Path) -> None:
    """Delete the ``WITHDRAWN`` packages from ``target`` (an older set's), whole, under its lock."""
    found = [old for name in WITHDRAWN for old in target.glob(f"{_dist_name(name)}-*.dist-info")]
    if found:
        with _locked(target), _signals_held():
            for old in found:
                _uninstall(target, old)
                print(f"Deleted {old.name[:-len('.dist-info')]}: the plugin no longer uses it.", flush=True)


def install_package(pin: Pin, target: Path | str) -> None:
    """Install one package (Pin) into ``target`` (Path): pip, run by this Python, unpacks it into the staging
    folder, then it replaces its older version in ``target`` (``_move_in``). Raises InstallError if pip fails,
    Cancelled if this process is stopped (``stop_on_signals``); either way the staging folder is removed. Raises
    InstallError, touching nothing, while another installer uses ``target`` (``_locked``)."""
    target = Path(target)
    staging = staging_folder(target)
    with _locked(target) as lock:
        target.mkdir(exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # a killed run's leftovers; pip needs an empty folder
        try:
            returncode = _run(pip_command(pin, staging), lock.fd)
            if returncode:
                raise InstallError(f"pip failed to install {pin.name}=={pin.version} (exit status {returncode}); "
                                   "see its messages above. What was installed before it is kept.")
            with _signals_held():
                _move_in(staging, target, pin.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _numpy_version() -> str:
    """This Python's numpy version, read without importing it, or "none"."""
    try:
        return importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _run(command: list[str], lock: int | None) -> int:
    """Run ``command``, echoing its output line by line as it comes; returns its exit status. The child inherits
    the descriptor ``lock`` (POSIX). If this process is stopped meanwhile (Cancelled), the child is stopped too
    before the exception goes on."""
    # Hide pip's warning about running as root: it writes only into the staging folder.
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_ROOT_USER_ACTION="ignore")
    child = subprocess.Popen(command, stdout=subprocess.PIPE,  # nosec B603
                             stderr=subprocess.STDOUT, text=True, errors="replace",
                             env=env, creationflags=NO_WINDOW,
                             pass_fds=(lock,) if os.name == "posix" and lock is not None else ())
    stdout = cast(IO[str], child.stdout)  # stdout=PIPE: never None
    try:
        for line in stdout:
            print(line, end="", flush=True)
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
        stdout.close()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back (POSIX) while a package moves into the target: a stop then waits for the move
    to end, so the package is left whole. Elsewhere (Windows) the dist-info moving last keeps it consistent."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _move_in(staging: Path, target: Path, name: str) -> None:
    """Replace package ``name`` in ``target`` by what pip put into ``staging``.

    The old version's dist-info goes first and its files after (per its RECORD); the new files come next, merged
    into folders other packages share (``nvidia/``, ``cuda/``), and the new dist-info last. So ``target`` records
    a package only while it is whole, and an interrupted move is redone by the next install.
    """
    for old in target.glob(f"{_dist_name(name)}-*.dist-info"):
        _uninstall(target, old)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name.endswith(".dist-info")):
        _merge(entry, target / entry.name)


def _uninstall(target: Path, dist_info: Path) -> None:
    """Delete a package's dist-info, then the files its RECORD (CSV: path, hash, size) lists inside ``target`` and
    the folders that leaves empty."""
    record = dist_info / "RECORD"
    rows = list(csv.reader(record.read_text(encoding="utf-8").splitlines())) if record.is_file() else []
    shutil.rmtree(dist_info)
    root = os.path.normpath(target)
    for row in rows:
        path = os.path.normpath(os.path.join(root, row[0]))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            continue  # outside target (pip's ../../bin scripts) or already gone
        os.remove(path)
        parent = os.path.dirname(path)
        while parent != root and not os.listdir(parent):
            os.rmdir(parent)
            parent = os.path.dirname(parent)


def _merge(source: Path, dest: Path) -> None:
    """Move ``source`` to ``dest``: folders present on both sides are merged, anything else replaced."""
    if source.is_dir() and dest.is_dir() and not dest.is_symlink():
        for child in source.iterdir():
            _merge(child, dest / child.name)
        return
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    os.replace(source, dest)


def remove(target: Path | str) -> bool:
    """Delete a dependency folder (``<plugin>/.deps/py<XY>``), its staging folder and what an interrupted removal
    left; refuses any other folder and a symbolic link. The folder is renamed aside (``trash_folder``) before it is
    deleted, so an interrupted removal leaves it whole or gone. Returns whether one was there. Raises InstallError
    if it is not such a folder, another installer uses it, or it cannot be deleted."""
    target = Path(target)
    if target.parent.name != ".deps" or not re.fullmatch(r"py\d+", target.name):
        raise InstallError(f"{target} is not a plugin dependency folder (<plugin>/.deps/py<XY>); nothing deleted.")
    if target.is_symlink():
        raise InstallError(f"{target} is a symbolic link to {os.readlink(target)}, not a dependency folder of its "
                           "own; nothing deleted. Delete the link yourself if it should go (what it points to "
                           "stays).")
    if not target.parent.is_dir():
        return False
    with _locked(target):
        shutil.rmtree(staging_folder(target), ignore_errors=True)
        trash = trash_folder(target)
        _delete(trash)
        if not target.exists():
            return False
        try:
            os.replace(target, trash)
        except OSError as error:  # Windows: a running QGIS holds the DLLs in it
            raise InstallError(f"Could not remove {target} ({error}); nothing was deleted. Close QGIS (it may be "
                               "using these packages) and run this again, or delete the folder yourself.") from None
        _delete(trash)
    return True


def _delete(folder: Path) -> None:
    """Delete ``folder`` if it exists; raises InstallError if it cannot."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise InstallError(f"Could not delete all of {folder} ({error}). Close QGIS (it may be using these files) "
                           "and remove the dependencies again, or delete the folder yourself.") from None


def stop_on_signals() -> None:
    """Make SIGTERM (and SIGINT, as usual) raise Cancelled in this process: how the QGIS dialog stops it."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise Cancelled(f"Stopped by signal {signum}.")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status: 0 done, 1 failed or missing, 2 stopped."""
    parser = argparse.ArgumentParser(prog="python3 -m df4lcz_plugin.runtime.dependencies",
                                     description="Install, remove or check the DF4LCZ plugin's private dependencies.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("install", "install what a variant lacks"), ("remove", "delete the dependency folder"),
                          ("missing", "list what a variant lacks (exit status 1 if anything)")):
        sub = commands.add_parser(command, help=text)
        if command != "remove":
            sub.add_argument("--variant", choices=VARIANTS, required=True)
        if command == "install":
            builds = torch_builds()
            sub.add_argument("--torch", choices=builds, default=next(iter(builds)),
                             help="PyTorch build of the full variant on this platform (default: %(default)s, the "
                                  "package registry's own)")
        sub.add_argument("--target", type=Path, default=deps_folder(PLUGIN_ROOT),
                         help="dependency folder (default: this plugin's, %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            stop_on_signals()
            install(args.variant, args.target, args.torch)
        elif args.command == "remove":
            print(f"Deleted {args.target}." if remove(args.target) else f"{args.target} does not exist.")
        else:
            lacking = missing(args.variant, args.target)
            print("\n".join(lacking) if lacking else f"Nothing of the '{args.variant}' dependencies is missing.")
            return 1 if lacking else 0
    except InstallError as error:
        print(error, file=sys.stderr)
        return 1
    except Cancelled as error:
        print(f"{error} The packages installed so far are whole and kept; installing again finishes the job.",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
