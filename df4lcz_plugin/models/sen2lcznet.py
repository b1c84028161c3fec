"""Sen2LCZ-Net (Qiu et al. 2020, IEEE JSTARS 13:2793, "Multilevel feature fusion-based CNN for local climate
zone classification from Sentinel-2 images"), in PyTorch.

This is the mapping configuration of the So2Sat LCZ42 benchmark repository
(ChunpingQiu/benchmark-on-So2SatLCZ42-dataset-a-simple-tour, ``img2map/img2lczMap_oneCity.py``):
``sen2LCZ_drop(depth=17, dropRate=0.2, fusion=1)``, i.e. four blocks of four 3×3 conv–BN–ReLU layers at
16/32/64/128 channels, max+average pooling concatenated between blocks, dropout after the 2nd and 3rd poolings,
and four softmax heads (after each pooling and after the last block) whose outputs are averaged.
793,348 Keras parameters (791,428 trainable + 1,920 BatchNorm running statistics).
"""

import torch
from torch import nn

from ..lcz.legend import CODES


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # Keras BatchNormalization defaults: epsilon 1e-3, momentum 0.99 (PyTorch momentum 0.01).
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.01),
        nn.ReLU(inplace=True),
    )


class Sen2LCZNet(nn.Module):
    """Sen2LCZ-Net with multilevel fusion (four averaged softmax heads).

    Input: float32 tensor (B, 10, 32, 32), Sentinel-2 bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 as
    reflectance (digital number / 10000, the So2Sat LCZ42 scaling), 10 m pixels.
    Output: float32 tensor (B, 17), class probabilities for LCZ 1–10, A–G (rows sum to 1).
    """

    def __init__(self, in_bands: int = 10, num_classes: int = len(CODES), width: int = 16, convs_per_block: int = 4,
                 drop_rate: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        channels_in = in_bands
        for level in range(4):
            channels = width * 2 ** level
            layers = [_conv_bn_relu(channels_in, channels)]
            layers += [_conv_bn_relu(channels, channels) for _ in range(convs_per_block - 1)]
            self.blocks.append(nn.Sequential(*layers))
            # Levels 0–2 end with max+avg pooling concatenated (2× channels); level 3 feeds GAP directly.
            head_in = 2 * channels if level < 3 else channels
            self.heads.append(nn.Linear(head_in, num_classes))
            channels_in = 2 * channels
        self.dropout = nn.Dropout(drop_rate)
        self.pool_max = nn.MaxPool2d(2)
        self.pool_avg = nn.AvgPool2d(2)

    def level_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each block (before pooling) and after each pooling merge, for layer checks."""
        outputs = []
        for level, block in enumerate(self.blocks):
            x = block(x)
            outputs.append(x)
            if level < 3:
                x = torch.cat([self.pool_max(x), self.pool_avg(x)], dim=1)
                if level > 0:
                    x = self.dropout(x)
                outputs.append(x)
        return outputs

    def head_probabilities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four heads' softmax outputs (B, 17): on merge0, merge1, merge2 and the last block."""
        feats = self.level_outputs(x)
        head_inputs = (feats[1], feats[3], feats[5], feats[6])
        return [torch.softmax(head(f.mean(dim=(2, 3))), dim=1) for head, f in zip(self.heads, head_inputs)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.head_probabilities(x)).mean(dim=0)
