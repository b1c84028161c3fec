"""The plugin's private Python dependencies: where they live, which are missing, and the one installer.

Two variants, pinned once in ``requirements/`` (shipped with the plugin):

- ``light`` (``light.txt``): OpenVINO, safetensors, lightgbm + scipy + narwhals. Enough for the Sentinel-2 stack and
  composites (s2cloudless cloud masks) and for classifying on the CPU with a Sentinel-2-only model whose OpenVINO
  form is built (the shipped model's is). About 100 MB.
- ``full`` (``plugin.txt``, which includes ``light.txt``): light plus PyTorch and what rests on it (CUDA, SAM,
  torch-geometric): GPU inference, VHR fusion, object graphs, training. About 5 GB.

They are installed with ``pip --no-deps --target`` into ``<plugin>/.deps/py<XY>`` (never into QGIS's own Python;
the pin files are the whole closure, without numpy: QGIS's own numpy < 2 is used), which the plugin puts first on
``sys.path`` before anything imports them. Command line, run from the plugin folder with the Python QGIS uses::

    python3 -m df4lcz_plugin.dependencies install --variant light|full [--target DIR]
    python3 -m df4lcz_plugin.dependencies remove [--target DIR]
    python3 -m df4lcz_plugin.dependencies missing --variant light|full [--target DIR]

This module imports nothing from QGIS, so that command runs outside QGIS too.
"""

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = PLUGIN_ROOT / "requirements"
#: Variant → its pin file in REQUIREMENTS.
VARIANTS = {"light": "light.txt", "full": "plugin.txt"}
#: Variant → {import name: what to tell the user it is}; full needs light's too.
MODULES = {
    "light": {"openvino": "OpenVINO", "safetensors": "safetensors", "lightgbm": "LightGBM", "scipy": "SciPy",
              "narwhals": "narwhals"},
    "full": {"torch": "PyTorch", "torchvision": "torchvision", "segment_anything": "Segment Anything",
             "mobile_sam": "MobileSAM", "timm": "timm", "cv2": "OpenCV", "torch_geometric": "PyTorch Geometric"},
}


class InstallError(RuntimeError):
    """pip is missing or failed, or a folder is not one this installer may delete."""


def deps_folder(plugin_root):
    """``<plugin_root>/.deps/py<major><minor>`` for the running Python."""
    return Path(plugin_root) / ".deps" / f"py{sys.version_info.major}{sys.version_info.minor}"


def activate(plugin_root):
    """Put the private dependency folder first on ``sys.path`` if it exists. Returns it (or None)."""
    folder = deps_folder(plugin_root)
    if not folder.is_dir():
        return None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder


def missing(variant):
    """Human names of the packages ``variant`` needs that cannot be imported (empty when all are present)."""
    modules = dict(MODULES["light"], **(MODULES["full"] if variant == "full" else {}))
    return [human for module, human in modules.items() if importlib.util.find_spec(module) is None]


def install_advice(variant, lacking):
    """What to tell a user whose Python lacks ``lacking`` (human names) of ``variant``: what and how to install."""
    return (f"{', '.join(lacking)} cannot be imported in QGIS's Python, so this needs the plugin's '{variant}' "
            f"dependencies. Install them: in the plugin folder {PLUGIN_ROOT}, run "
            f"'python3 -m df4lcz_plugin.dependencies install --variant {variant}' with the Python QGIS uses, "
            "then restart QGIS.")


def pins(variant):
    """(name, version) of every ``name==version`` pin of ``variant``, following ``-r`` includes."""
    return _read_pins(REQUIREMENTS / VARIANTS[variant])


def _read_pins(path):
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out += _read_pins(path.parent / line[3:].strip())
        elif line:
            name, version = line.split("==")
            out.append((name.strip(), version.strip()))
    return out


def installed(target, name, version):
    """True if ``target`` holds ``<normalised name>-<version>.dist-info`` (how pip names it)."""
    return (Path(target) / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info").is_dir()


def install(variant, target):
    """pip-install into ``target`` the pins of ``variant`` it lacks; returns them (``name==version``).

    A pin whose dist-info is already in ``target`` is skipped, so a new pin costs one download, not a reinstall of
    PyTorch, and a complete folder costs nothing. pip runs as a child of this Python with ``--no-deps --target``,
    so it writes nothing outside ``target``; its progress goes to this process's output. Raises InstallError.
    """
    target = Path(target)
    todo = [f"{name}=={version}" for name, version in pins(variant) if not installed(target, name, version)]
    if not todo:
        print(f"The '{variant}' dependencies are all installed in {target}.", flush=True)
        return todo
    if importlib.util.find_spec("pip") is None:
        raise InstallError(f"{sys.executable} has no pip; install pip for it (Debian: apt install python3-pip).")
    target.mkdir(parents=True, exist_ok=True)
    print(f"Installing {len(todo)} package(s) of the '{variant}' dependencies into {target}: {' '.join(todo)}",
          flush=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
                          "--upgrade", "--target", str(target)] + todo)
    if pip.returncode:
        raise InstallError(f"pip failed (exit status {pip.returncode}); see its messages above.")
    return todo


def remove(target):
    """Delete a dependency folder (``<plugin>/.deps/py<XY>``); refuses any other folder. Returns whether one
    was there."""
    target = Path(target)
    if target.parent.name != ".deps" or not target.name.startswith("py"):
        raise InstallError(f"{target} is not a plugin dependency folder (<plugin>/.deps/py<XY>); nothing deleted.")
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True


def main(argv=None):
    """The command line (module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m df4lcz_plugin.dependencies",
                                     description="Install, remove or check the DF4LCZ plugin's private dependencies.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("install", "install what a variant lacks"), ("remove", "delete the dependency folder"),
                          ("missing", "list what a variant lacks (exit status 1 if anything)")):
        sub = commands.add_parser(command, help=text)
        if command != "remove":
            sub.add_argument("--variant", choices=VARIANTS, required=True)
        sub.add_argument("--target", type=Path, default=deps_folder(PLUGIN_ROOT),
                         help="dependency folder (default: this plugin's, %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.variant, args.target)
        elif args.command == "remove":
            print(f"Deleted {args.target}." if remove(args.target) else f"{args.target} does not exist.")
        else:
            sys.path.insert(0, str(args.target))  # what QGIS sees: the folder first, then its own Python
            lacking = missing(args.variant)
            print("\n".join(lacking) if lacking else f"Nothing of the '{args.variant}' dependencies is missing.")
            return 1 if lacking else 0
    except InstallError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
