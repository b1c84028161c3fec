"""Choose the torch device from the user's ``DEVICE`` setting: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(spec: str | None = "auto") -> torch.device | str:
    """A ``torch.device`` for ``spec``; ``auto`` picks the first CUDA GPU when there is one, else the CPU.
    Without PyTorch (an OpenVINO-only install) the CPU is the string ``"cpu"``.

    Raises DeviceError for an unknown spelling, or for ``cuda``/``cuda:N`` without such a GPU.
    """
    spec = (spec or "auto").strip().lower()
    try:
        import torch
    except ImportError:
        if spec in ("auto", "cpu"):
            return "cpu"
        raise DeviceError(f"DEVICE={spec} needs PyTorch, which is not installed; use DEVICE=cpu.") from None
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise DeviceError(f"DEVICE '{spec}' is not understood; use auto, cpu, cuda or cuda:N.")
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        raise DeviceError(f"DEVICE={spec} was requested but PyTorch sees no CUDA GPU on this machine "
                          "(torch.cuda.is_available() is False); use DEVICE=auto or DEVICE=cpu.")
    if index >= torch.cuda.device_count():
        raise DeviceError(f"DEVICE={spec} was requested but only {torch.cuda.device_count()} CUDA GPU(s) exist.")
    return torch.device(f"cuda:{index}")
