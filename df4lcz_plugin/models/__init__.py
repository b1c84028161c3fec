"""Model definitions. ``keras_default_init`` gives a freshly built module Keras's default initial weights."""


from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

ModuleT = TypeVar("ModuleT", bound="nn.Module")


def keras_default_init(module: ModuleT) -> ModuleT:
    """Initialise ``module`` in place as Keras layers are by default, and return it.

    The authors' Keras models set no initialisers, so every kernel (Conv3D, Dense, and both of Spektral
    GCSConv's kernels) starts Glorot-uniform and every bias at zero; PyTorch's defaults differ (Kaiming-uniform
    with a = √5, nonzero biases). Kernels are the parameters named ``weight`` with ≥ 2 dimensions; 1-D weights
    (BatchNorm's γ = 1, β = 0 already match Keras) are left alone.
    """
    from torch import nn

    for layer in module.modules():
        weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            nn.init.xavier_uniform_(weight)
            if isinstance(bias, nn.Parameter):
                nn.init.zeros_(bias)
    return module
