"""PyTorch's BLAS inside QGIS (``runtime.torch_blas``): QGIS on Linux loads the system BLAS (Debian:
``libblas.so.3``, OpenBLAS) globally through GDAL → Armadillo, and PyTorch's ``sgemm_`` calls would bind to it
(SAM 1.9× slower in ``qgis_process``). The dynamic linker's own log (``LD_DEBUG=bindings``) shows where
``libtorch_cpu.so``'s ``sgemm_`` goes."""

import ctypes.util
import os
import re
import subprocess
import sys

import pytest
from conftest import FARMLAND_EXTENT, ROOT, run_qgis_process

from df4lcz_plugin.runtime.torch_blas import SWITCH

pytestmark = pytest.mark.timeout(300)

BINDING = re.compile(r"binding file (\S*libtorch_cpu\.so) \[0\] to (\S+) \[0\]: normal symbol `sgemm_'")


def _torch_sgemm_bindings(folder):
    """{library that libtorch_cpu.so's sgemm_ was bound to} from the LD_DEBUG files written into ``folder``."""
    found = set()
    for log in folder.glob("ld.*"):
        with open(log, errors="replace") as lines:
            found.update(match.group(2) for match in map(BINDING.search, lines) if match)
    return found


@pytest.mark.parametrize("switch", ["", "0"])
def test_pytorch_keeps_its_own_blas_in_qgis_process(qgis_env, s2_stack, tmp_path, switch):
    """A classification on PyTorch through qgis_process.bin: libtorch_cpu.so's sgemm_ binds to libtorch_cpu.so
    itself; with DF4LCZ_TORCH_DEEPBIND=0 (the control, and the users' way out) it binds to the system BLAS that
    QGIS loaded, as it did before."""
    log = tmp_path / "ld"
    log.mkdir()
    env = dict(qgis_env, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(log / "ld"), **{SWITCH: switch})
    x0, y0, x1, y1 = FARMLAND_EXTENT
    rc, _, text = run_qgis_process(env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": f"{x0},{x1},{y0},{y1} [EPSG:32618]", "BACKEND": "pytorch",
        "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text[-3000:]
    (bound,) = _torch_sgemm_bindings(log)
    if switch == "0":
        assert re.search(r"/lib[^/]*/.*blas[^/]*\.so", bound) and "torch" not in bound
    else:
        assert bound.endswith("/torch/lib/libtorch_cpu.so")


def test_outside_qgis_nothing_changes_and_a_global_blas_is_handled(tmp_path):
    """In a plain Python process there is no global BLAS and torch imports as usual ("not needed"). A process
    that loads the system BLAS RTLD_GLOBAL first, as QGIS does, gets the finder ("on"): torch binds sgemm_ to
    itself, keeps its own loader, and the finder is gone after the import."""
    blas = ctypes.util.find_library("blas")
    if blas is None:
        pytest.skip("no system BLAS on this machine")
    script = (
        "import ctypes, os, sys; sys.path.insert(0, sys.argv[1]);"
        "from df4lcz_plugin.runtime import torch_blas;"
        "sys.argv[2] and ctypes.CDLL(sys.argv[2], mode=os.RTLD_NOW | ctypes.RTLD_GLOBAL);"
        "print(torch_blas.keep_own_blas(), torch_blas.status()['finder_waiting']);"
        "import torch; print(type(torch.__loader__).__name__, torch.__spec__.loader is torch.__loader__,"
        " torch_blas.status()['finder_waiting'], float((torch.ones(2, 3) @ torch.ones(3, 2))[0, 0]))")
    runs = {}
    for name, preload in (("plain", ""), ("global", blas)):
        folder = tmp_path / name
        folder.mkdir()
        env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(folder / "ld"))
        env.pop(SWITCH, None)
        out = subprocess.run([sys.executable, "-c", script, str(ROOT), preload], env=env, capture_output=True,
                             text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[name] = (out.stdout.split(), _torch_sgemm_bindings(folder))
    assert runs["plain"][0] == ["not", "needed", "False", "SourceFileLoader", "True", "False", "3.0"]
    assert runs["global"][0] == ["on", "True", "SourceFileLoader", "True", "False", "3.0"]
    for stdout, bound in runs.values():
        assert len(bound) == 1 and next(iter(bound)).endswith("/torch/lib/libtorch_cpu.so")
