"""The settings of a classification: one frozen object that ``df4lcz:classifylcz``, ``df4lcz:classifydates``, the
command line and the Dask workers (inside ``classify.TileJob``) share, checked in one place when it is made.

What a run reads and writes (the Sentinel-2 raster, the model, the extent, the output paths, VHR imagery) is not
here: those are ``classify.classify``'s arguments. Everything here is plain data, so it pickles to Dask workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..lcz import legend
from ..models.backends import BACKENDS, PRECISIONS
from ..runtime.grid import PATCH_PX
from ..sentinel2.checks import InputError
from ..sentinel2.clouds import MAX_CLOUD_PERCENT


@dataclass(frozen=True)
class ClassifySettings:
    """How to classify (``classify.classify``). Raises InputError on a value that cannot be used, naming it."""

    resolution: float = 100.0
    """RESOLUTION: output cell size in metres, a whole multiple of the Sentinel-2 pixel (10 m); checked against the
    raster's pixel by ``grid.make_grid``."""
    device: str = "cpu"
    """DEVICE: cpu, cuda or cuda:N, where the models run (stored as text: a ``torch.device`` is given as its name).
    auto only on a cluster, where each worker resolves it (``device.resolve_device``); in this process, give the
    resolved device."""
    backend: str = "auto"
    """BACKEND of the Sentinel-2 stream, one of ``backends.BACKENDS`` (auto: OpenVINO on the CPU, PyTorch on a GPU)."""
    precision: str = "f32"
    """PRECISION of OpenVINO, one of ``backends.PRECISIONS`` (bf16: faster on CPUs with bf16, OpenVINO only)."""
    batch_size: int = 128
    """BATCH_SIZE: 32 × 32-pixel patches per inference batch, ≥ 1."""
    threads: int = 0
    """CPU inference threads per Dask worker, ≥ 0; 0: the back-end's default (``backends.OPENVINO_THREADS``,
    ``TORCH_CPU_THREADS``)."""
    tile_size: Optional[int] = None
    """Output cells per tile side; None: the largest (``classify.tile_cells``), which also bounds it (checked with the
    grid). The map does not depend on it."""
    max_cloud: float = MAX_CLOUD_PERCENT
    """MAX_CLOUD, percent (0–100) of a patch's pixels with data that the stack's own mask band (clouds, shadows) may
    hide before the cell is no data."""
    tta: bool = False
    """TTA: the Sentinel-2 probabilities averaged over the 8 flips and rotations of each patch (8× the inference)."""
    palette: str = "official_2022"
    """PALETTE of the LCZ map, a key of ``legend.PALETTE_TITLES``."""
    sam_checkpoint: Optional[str] = None
    """VHR stream: SAM checkpoint file (.pt or .pth); None: MobileSAM."""
    fast_sam: bool = False
    """VHR stream: SAM under bfloat16 autocast (not the paper-exact masks; pays on a GPU only)."""
    vhr_source_id: Optional[str] = None
    """VHR stream: the imagery's identity in the object-graph cache key; None: its file."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", str(self.device))
        if not 0 <= self.max_cloud <= 100:  # NaN too
            raise InputError(f"MAX_CLOUD {self.max_cloud} is not a percentage from 0 to 100.")
        for name, value, smallest in (("BATCH_SIZE", self.batch_size, 1), ("threads", self.threads, 0)):
            if int(value) != value or value < smallest:
                raise InputError(f"{name} {value} is not a whole number ≥ {smallest}.")
        for name, text, allowed in (("BACKEND", self.backend, BACKENDS), ("PRECISION", self.precision, PRECISIONS),
                                    ("PALETTE", self.palette, tuple(legend.PALETTE_TITLES))):
            if text not in allowed:
                raise InputError(f"{name} '{text}' is not one of {', '.join(allowed)}.")

    @property
    def max_masked_px(self) -> int:
        """The most masked pixels of a 32 × 32 patch for ``max_cloud`` percent."""
        return int(self.max_cloud / 100 * PATCH_PX * PATCH_PX)
