"""Regenerate the pinned dependency sets in ``requirements/`` with uv's resolver (``make pins``); never edit them.

From the checked-in inputs (``light.in``, ``full.in``, ``dev.in``, ``overrides.txt``) it writes, for each Python
QGIS ships (``PYTHONS``):

- ``py3XX/full-<platform>.txt`` and ``py3XX/light-<platform>.txt`` for each platform of ``PLATFORMS``: the plugin's
  variants, wheels only, without numpy; light is resolved within full's versions, so the two agree;
- ``py3XX/dev.txt``: the development tools for ``.venv`` on Linux (without numpy and h5py, which come from Debian).

numpy takes part in each resolution as a constraint, pinned to the lowest numpy QGIS ships with that Python, so that
every set works with QGIS's own numpy, which the plugin uses and never installs.

An existing output is the resolver's preference (uv keeps its versions while they still fit), and a missing one
starts from the same Python's Linux set, else Python 3.11's: regenerating changes only what the inputs make change.
``python scripts/compile_pins.py [--upgrade] [--root DIR]``: ``--upgrade`` takes the newest versions the inputs
allow; ``--root DIR`` reads and writes ``DIR/requirements`` instead (tests/test_pins.py regenerates a copy and
compares it with the checked-in sets).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
#: Python → the lowest numpy QGIS ships with it: Debian bookworm (QGIS 3.22) 1.24.2; QGIS 4 and 3.40+ on Windows
#: and macOS: numpy 2; Debian trixie (QGIS 3.40) 2.2.4; Debian sid (QGIS 3.44) 2.4.
PYTHONS = {"3.11": "1.24.2", "3.12": "2.0.0", "3.13": "2.2.4", "3.14": "2.4.0"}
#: File suffix → uv's --python-platform: glibc 2.28 (PyTorch's Linux wheels), Windows x86_64, macOS on Apple silicon
#: (14.0 and newer: PyTorch's macOS wheels, MACOS_TARGET).
PLATFORMS = {"linux": "x86_64-manylinux_2_28", "windows": "x86_64-pc-windows-msvc", "macos": "aarch64-apple-darwin"}
MACOS_TARGET = "14.0"
#: Shipped with the plugin as the installer reads them; numpy is QGIS's own.
VARIANT_EXCLUDES = ("numpy",)
#: Debian's own in .venv (scripts/setup.sh).
DEV_EXCLUDES = ("numpy", "h5py")
COMMAND = "python scripts/compile_pins.py"


def uv_binary():
    """Path of the pinned uv (requirements/dev.in) of this Python's environment."""
    from uv import find_uv_bin

    return find_uv_bin()


def folder(python, requirements=REQUIREMENTS):
    return Path(requirements) / f"py{python.replace('.', '')}"


def compile_set(root, source, output, python, platform, excludes, constraints=(), upgrade=False):
    """Resolve ``source`` (an input file) into ``output`` with uv for ``python`` on ``platform`` (uv's
    --python-platform), wheels only; paths are relative to ``root``, as the outputs' annotations name them. Raises
    CalledProcessError (uv's message on stderr) when there is no solution."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as numpy:
        numpy.write(f"numpy=={PYTHONS[python]}\n")
    try:
        command = [uv_binary(), "pip", "compile", "--quiet", "--no-progress", str(source),
                   "--python-version", python, "--python-platform", platform, "--only-binary", ":all:",
                   "--override", "requirements/overrides.txt", "-c", numpy.name,
                   *[arg for path in constraints for arg in ("-c", str(path))],
                   *[arg for name in excludes for arg in ("--no-emit-package", name)],
                   "--custom-compile-command", COMMAND, "--index-url", "https://pypi.org/simple",
                   "--output-file", str(output), *(["--upgrade"] if upgrade else [])]
        subprocess.run(command, cwd=root, check=True, env=dict(os.environ, UV_NO_CONFIG="1", MACOSX_DEPLOYMENT_TARGET=MACOS_TARGET))
    finally:
        os.unlink(numpy.name)


def _seed(root, output, *preferences):
    """Start a missing ``output`` from the first existing file of ``preferences`` (uv's preferred versions); all
    relative to ``root``."""
    output = root / output
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        for preference in preferences:
            if (root / preference).exists():
                shutil.copyfile(root / preference, output)
                return


def compile_all(root=ROOT, upgrade=False):
    """Write every set into ``root``/requirements from the inputs there. Returns the paths written (relative to
    ``root``)."""
    root = Path(root)
    written = []
    first = folder("3.11", "requirements")
    for python in PYTHONS:
        here = folder(python, "requirements")
        for platform, tag in PLATFORMS.items():
            full, light = here / f"full-{platform}.txt", here / f"light-{platform}.txt"
            _seed(root, full, here / "full-linux.txt", first / f"full-{platform}.txt", first / "full-linux.txt")
            compile_set(root, "requirements/full.in", full, python, tag, VARIANT_EXCLUDES, upgrade=upgrade)
            _seed(root, light, full)
            compile_set(root, "requirements/light.in", light, python, tag, VARIANT_EXCLUDES, [full], upgrade)
            written += [full, light]
        dev = here / "dev.txt"
        _seed(root, dev, first / "dev.txt")
        compile_set(root, "requirements/dev.in", dev, python, PLATFORMS["linux"], DEV_EXCLUDES, upgrade=upgrade)
        written.append(dev)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="folder holding requirements/ (default: %(default)s)")
    parser.add_argument("--upgrade", action="store_true", help="newest versions the inputs allow")
    args = parser.parse_args(argv)
    for path in compile_all(args.root, args.upgrade):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
