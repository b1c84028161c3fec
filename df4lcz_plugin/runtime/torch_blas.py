"""PyTorch's own matrix products inside a QGIS process on Linux.

QGIS on Linux links GDAL, which links Armadillo and through it the system's BLAS (Debian: ``libblas.so.3``, an
OpenBLAS with a thread pool of its own). The QGIS executable loads it into the process's global symbol scope at
start, before any plugin. PyTorch's ``libtorch_cpu.so`` defines its own ``sgemm_`` (MKL) but calls it through the
PLT, and a global definition that is already loaded wins: inside QGIS, PyTorch's ``addmm``, ``linear`` and
``bmm`` run on the system OpenBLAS, whose threads then compete with PyTorch's OpenMP threads. Measured on the
development machine (2 cores, Debian bookworm's QGIS 3.22, MobileSAM, the paper's AMG settings; issue 28): SAM's
mask generation after the image encoder (decoder and post-processing) took 13–18 s a 320 m tile in ``qgis_process``
against 5.5–5.9 s in a Python process; with PyTorch loaded as this module does, 5.5 s, the same as in Python
(``gdb`` showed ``at::native::cpublas::gemm`` calling ``sgemm_`` in ``/lib/x86_64-linux-gnu/libblas.so.3``
before; ``LD_DEBUG=bindings`` shows libtorch's own after).

``keep_own_blas()`` puts a finder first on ``sys.meta_path`` that imports the top-level ``torch`` package with
``RTLD_DEEPBIND`` added to the dlopen flags (glibc: a library loaded so resolves its symbols in itself and its
own dependencies before the global scope), then takes itself away. It does so only where it matters: on Linux,
when the global scope already defines ``sgemm_`` and ``torch`` is not imported yet. A plain Python process
(tests, the command line, Dask workers) has no global BLAS and imports torch as usual. ``DF4LCZ_TORCH_DEEPBIND=0``
in the environment turns it off (should a system's libraries not bear RTLD_DEEPBIND).
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: The environment variable that turns the finder off when it is "0".
SWITCH = "DF4LCZ_TORCH_DEEPBIND"
#: The Fortran BLAS symbol PyTorch's CPU matrix products call (``at::native::cpublas::gemm``).
BLAS_SYMBOL = "sgemm_"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def global_blas() -> str | None:
    """The file of the library that defines ``sgemm_`` in this process's global symbol scope (a BLAS loaded by
    the host program, or by a library loaded RTLD_GLOBAL), or None: none, or not Linux."""
    if not sys.platform.startswith("linux"):
        return None
    scope = ctypes.CDLL(None)
    try:
        address = ctypes.cast(getattr(scope, BLAS_SYMBOL), ctypes.c_void_p)
    except AttributeError:
        return None
    info = _DlInfo()
    try:  # glibc < 2.34 keeps dladdr in libdl, which the process may not have loaded
        found = scope.dladdr(address, ctypes.byref(info))
    except AttributeError:
        found = 0
    return os.fsdecode(info.dli_fname) if found and info.dli_fname else "an unknown library"


class _DeepBindLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` with RTLD_DEEPBIND added to the dlopen flags, so that the
    extension modules torch loads meanwhile (``torch._C`` and through it ``libtorch_cpu.so``) bind to their own
    symbols first; then gives the module its own loader back."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            self.loader.exec_module(module)
        finally:
            sys.setdlopenflags(flags)
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader


class OwnBLASFinder(importlib.abc.MetaPathFinder):
    """The first import of ``torch`` through ``_DeepBindLoader``; gone from ``sys.meta_path`` after it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torch":
            return None
        _remove_finders()
        spec = importlib.util.find_spec(fullname)  # the other finders' answer, found without this one
        if spec is not None and spec.loader is not None:
            spec.loader = _DeepBindLoader(spec.loader)
        return spec


def _is_finder(finder: object) -> bool:
    # By class name: a plugin reload brings a new class, and the earlier one's finder counts too.
    return type(finder).__name__ == OwnBLASFinder.__name__


def _remove_finders() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not _is_finder(f)]


def keep_own_blas() -> str:
    """Make the next ``import torch`` bind PyTorch's BLAS calls to its own library where a global BLAS would
    take them (module docstring). Returns what it did, for diagnostics and tests: ``"not needed"``, ``"torch already
    imported"`` (nothing can change then), ``"off"`` (``DF4LCZ_TORCH_DEEPBIND=0``) or ``"on"``. Never raises."""
    _remove_finders()
    if os.environ.get(SWITCH) == "0":
        return "off"
    foreign = global_blas()
    if foreign is None or not hasattr(os, "RTLD_DEEPBIND"):
        return "not needed"
    if "torch" in sys.modules:
        return "torch already imported"
    sys.meta_path.insert(0, OwnBLASFinder())
    return "on"


def status() -> dict[str, Any]:
    """{global_blas: file or None, torch_imported: bool, finder_waiting: bool}: for diagnostics and tests."""
    return {"global_blas": global_blas(), "torch_imported": "torch" in sys.modules,
            "finder_waiting": any(map(_is_finder, sys.meta_path))}
