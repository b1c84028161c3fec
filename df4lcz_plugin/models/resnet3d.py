"""The DF4LCZ Sentinel-2 stream: 3D ResNet11 (Wu et al. 2024, IEEE TGRS, DF4LCZ, Fig. 4; official code
ctrlovefly/DF4LCZ ``model.py: resnet11_3D``). See ``shared/design/df4lcz_method.md`` §5.

The 10 bands form a depth axis of one input channel; three bottleneck blocks of widths 64/128/256 (outputs
256/512/1024), global average pooling and a 17-way linear layer. 3,538,961 trainable parameters.
A new module starts from Keras's default initial weights (``keras_default_init``), as the authors' model does.
"""

import torch
from torch import nn

from ..lcz.legend import CODES
from . import keras_default_init


def _bn(channels: int) -> nn.BatchNorm3d:
    # Keras BatchNormalization defaults: epsilon 1e-3, momentum 0.99.
    return nn.BatchNorm3d(channels, eps=1e-3, momentum=0.01)


class Bottleneck3d(nn.Module):
    """conv1×1(stride)–BN–ReLU, conv3×3–BN–ReLU, conv1×1(4f)–BN, plus a shortcut, then ReLU."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = 4 * width
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, width, kernel_size=1, stride=stride), _bn(width), nn.ReLU(inplace=True),
            nn.Conv3d(width, width, kernel_size=3, padding=1), _bn(width), nn.ReLU(inplace=True),
            nn.Conv3d(width, out_channels, kernel_size=1), _bn(out_channels),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride),
                                          _bn(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet11_3D(nn.Module):
    """3D ResNet11 classifier.

    Input: float32 (B, 10, 32, 32), the same band order and scaling as the model card states; it is viewed as
    (B, 1, D=10, H=32, W=32). Output: float32 (B, 17) class probabilities (softmax of the logits).
    ``logits(x)`` gives the pre-softmax scores, for training with ``CrossEntropyLoss``.
    """

    def __init__(self, num_classes: int = len(CODES), widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(1, 64, kernel_size=3, padding=1), _bn(64), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels = 64
        for index, width in enumerate(widths):
            blocks.append(Bottleneck3d(channels, width, stride=1 if index == 0 else 2))
            channels = 4 * width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)
        keras_default_init(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x.unsqueeze(1)))
        return self.head(x.mean(dim=(2, 3, 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(dim=1)
