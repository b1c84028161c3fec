"""The files that make up the installed plugin: copy them into a QGIS profile, or zip them for the repository.

Usage: ``python scripts/plugin_files.py copy PLUGIN_DIR`` or ``python scripts/plugin_files.py zip OUTPUT.zip``.
"""

import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "df4lcz"
# The pin files ship so that the installed plugin can install its own dependencies (df4lcz_plugin.dependencies).
ITEMS = ("metadata.txt", "__init__.py", "LICENSE", "README.md", "df4lcz_plugin", "algorithms", "resources",
         "requirements/light.txt", "requirements/plugin.txt")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*.part")


def files():
    """Relative paths of every file of the plugin."""
    out = []
    for item in ITEMS:
        path = ROOT / item
        if path.is_file():
            out.append(Path(item))
        else:
            out += [p.relative_to(ROOT) for p in sorted(path.rglob("*"))
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".part")]
    return out


def copy(plugin_dir):
    """Make ``plugin_dir`` hold exactly the plugin's files, keeping its private ``.deps`` folder."""
    plugin_dir = Path(plugin_dir)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    for child in plugin_dir.iterdir():
        if child.name != ".deps":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for item in ITEMS:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, plugin_dir / item, ignore=_IGNORE)
        else:
            (plugin_dir / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, plugin_dir / item)


def make_zip(zip_path):
    """The plugin zip for the QGIS plugin repository (folder ``df4lcz/``; dependencies are not bundled)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files():
            archive.write(ROOT / relative, f"{PLUGIN_NAME}/{relative}")
    return zip_path


if __name__ == "__main__":
    command, target = sys.argv[1], sys.argv[2]
    print({"copy": copy, "zip": make_zip}[command](target) or target)
