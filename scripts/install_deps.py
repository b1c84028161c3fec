"""Install the pinned plugin dependencies (requirements/plugin.txt) into the plugin-private folder, incrementally.

Usage: ``python scripts/install_deps.py TARGET``. A pin whose ``<name>-<version>.dist-info`` is already in TARGET
is skipped, so a new pin costs one download, not a reinstall of PyTorch. ``--no-deps``: the file is the whole
closure, and numpy is deliberately absent (QGIS's own numpy < 2 is used).
"""

import re
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements" / "plugin.txt"


def pins():
    """(name, version) of every ``name==version`` line."""
    out = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out.append((name.strip(), version.strip()))
    return out


def installed(target, name, version):
    """True if TARGET holds ``<normalised name>-<version>.dist-info`` (how pip names it)."""
    return (Path(target) / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info").is_dir()


def main(target):
    Path(target).mkdir(parents=True, exist_ok=True)
    missing = [f"{name}=={version}" for name, version in pins() if not installed(target, name, version)]
    if not missing:
        return
    print(f"installing {len(missing)} package(s) into {target}: {' '.join(missing)}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--upgrade", "--target", str(target)] + missing, check=True)


if __name__ == "__main__":
    main(sys.argv[1])
