"""Where the plugin's private Python dependencies live, and which are missing.

Setup installs them (pinned, without numpy: QGIS's own numpy < 2 is used) into ``<plugin>/.deps/py<XY>``, which
the plugin puts first on ``sys.path`` before anything imports torch.
"""

import importlib.util
import sys
from pathlib import Path

#: Import name → what to tell the user it is.
REQUIRED = {"torch": "PyTorch", "safetensors": "safetensors"}


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


def missing():
    """Human names of required packages that cannot be imported (empty when all are present)."""
    return [human for module, human in REQUIRED.items() if importlib.util.find_spec(module) is None]
