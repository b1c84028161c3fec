"""Prepare a trained stream for fast inference without changing its function."""

import copy
from typing import TypeVar, cast

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def fuse_conv_bn(module: ModuleT) -> ModuleT:
    """An eval-mode copy of ``module`` in which every Conv→BatchNorm pair inside an ``nn.Sequential`` is folded
    into one convolution (PyTorch's ``fuse_conv_bn_eval``). Outputs agree to float rounding (≈1e-6 on the
    Sen2LCZ-Net probabilities); on 2 CPU cores Sen2LCZ-Net runs ≈1.35× faster (bench/bench_sentinel2.py).
    """
    fused = copy.deepcopy(module).eval()
    for sequential in [m for m in fused.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(sequential) - 1):
            conv, norm = sequential[index], sequential[index + 1]
            if any(isinstance(conv, c) and isinstance(norm, b) for c, b in _PAIRS):
                # The pair is one of _PAIRS: a convolution and a batch norm.
                sequential[index] = fuse_conv_bn_eval(cast(_ConvNd, conv), cast(_BatchNorm, norm))
                sequential[index + 1] = nn.Identity()
    return fused
