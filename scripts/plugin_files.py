"""The files that make up the installed plugin: copy them into a QGIS profile, or zip them for the repository.

Usage: ``python scripts/plugin_files.py copy PLUGIN_DIR`` or ``python scripts/plugin_files.py zip DIST_DIR``
(writes ``DIST_DIR/df4lcz.<version>.zip``, the plugin repository's naming).
"""

import configparser
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from df4lcz_plugin.models.backends import converted_path  # noqa: E402
from df4lcz_plugin.models.registry import ModelError, builtin_models_dir, model_files, read_card  # noqa: E402

PLUGIN_NAME = "df4lcz"
#: The shipped model; the zip must hold its weights, card and OpenVINO form (classification without PyTorch).
SHIPPED_MODEL = builtin_models_dir() / "sen2lcznet_so2sat.json"
# .secrets.baseline: the detect-secrets findings accepted for plugins.qgis.org (scripts/release_checks.py).
# The pin files and their inputs ship so that the installed plugin can install and check its own dependencies
# (df4lcz_plugin.runtime.dependencies); the development tools' pins (py3XX/dev.txt) do not.
ITEMS = ("metadata.txt", "__init__.py", "LICENSE", "README.md", "df4lcz_plugin", "algorithms", "resources",
         "requirements/light.in", "requirements/full.in", ".secrets.baseline",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "requirements").glob("py3*/*-*.txt")))
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*.part")
#: The documentation site, built from docs/ (mkdocs.yml) into the plugin: each algorithm's Help opens its page there
#: (algorithms/base.py, helpUrl), offline.
SITE = "docs_site"


def files():
    """Relative paths of every file of the plugin."""
    out = []
    for item in ITEMS:
        path = ROOT / item
        if path.is_file():
            out.append(Path(item))
        else:
            # os.walk follows a linked folder (resources/lcz_models in a git worktree), as copy() does.
            found = [Path(folder, name) for folder, _, names in os.walk(path, followlinks=True) for name in names]
            out += [p.relative_to(ROOT) for p in sorted(found)
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".part")]
    return out


@contextlib.contextmanager
def built_site():
    """A temporary folder holding the documentation site, built by this Python's MkDocs (about 2 s).

    Raises SystemExit with MkDocs' message and the fix when it fails (MkDocs is in requirements/dev.txt).
    """
    with tempfile.TemporaryDirectory() as folder:
        try:
            done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--config-file",
                                   str(ROOT / "mkdocs.yml"), "--site-dir", folder], capture_output=True, text=True,
                                  timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
        except subprocess.TimeoutExpired:
            raise SystemExit("MkDocs took more than 5 minutes to build the documentation site.") from None
        if done.returncode != 0:
            raise SystemExit(f"The documentation site did not build with {sys.executable} (MkDocs is installed by "
                             f"'make setup', requirements/dev.txt):\n{done.stderr.strip()[-2000:]}")
        yield Path(folder)


def copy(plugin_dir):
    """Make ``plugin_dir`` hold exactly the plugin's files and the built site (where this Python has MkDocs),
    keeping its private ``.deps`` folder."""
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
    if importlib.util.find_spec("mkdocs") is None:  # a Python without the development tools (a Debian root's)
        print(f"{plugin_dir}: no documentation site (Help pages) without MkDocs; 'make setup' installs it.",
              file=sys.stderr)
        return
    with built_site() as site:
        shutil.copytree(site, plugin_dir / SITE)


def runtime_model_files():
    """The shipped model's files the zip needs at run time: card, weights, OpenVINO .xml and .bin.

    Raises SystemExit naming the missing file and the command that makes it (``make setup``).
    """
    try:
        card = read_card(SHIPPED_MODEL)
    except ModelError as error:
        raise SystemExit(f"{error} Run 'make setup' first: it builds the shipped model.") from None
    xml = converted_path(card)
    needed = [*model_files(SHIPPED_MODEL), xml, xml.with_suffix(".bin")]
    for path in needed:
        if not path.is_file() or path.parent != SHIPPED_MODEL.parent:
            raise SystemExit(f"The shipped model's {path.name} is missing from {SHIPPED_MODEL.parent}; run "
                             "'make setup' first: it converts the model to OpenVINO.")
    return needed


def version():
    """The plugin version from metadata.txt."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(ROOT / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def make_zip(dist_dir):
    """``dist_dir/df4lcz.<version>.zip`` for the QGIS plugin repository: folder ``df4lcz/``, files mode 0644,
    the shipped model complete (``runtime_model_files``) and the built documentation site in ``docs_site/``; the
    dependencies are not bundled (the plugin's installer fetches them)."""
    runtime_model_files()
    zip_path = Path(dist_dir) / f"{PLUGIN_NAME}.{version()}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with built_site() as site, zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [(ROOT / relative, relative) for relative in files()]
        entries += [(path, Path(SITE) / path.relative_to(site)) for path in sorted(site.rglob("*")) if path.is_file()]
        for path, relative in entries:
            info = zipfile.ZipInfo.from_file(path, f"{PLUGIN_NAME}/{relative}")
            info.external_attr = 0o100644 << 16  # the repository wants plain 0644 files, whatever the checkout's
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return zip_path


if __name__ == "__main__":
    command, target = sys.argv[1], sys.argv[2]
    print({"copy": copy, "zip": make_zip}[command](target) or target)
