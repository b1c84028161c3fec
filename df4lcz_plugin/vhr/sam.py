"""The SAM step of DF4LCZ's high-resolution stream: Segment Anything masks of one 320 m patch.

Settings are the paper's (``ctrlovefly/DF4LCZ`` ``ins_gen.py``; ``shared/design/df4lcz_method.md`` §2): automatic
mask generation with a 12×12 point grid, pred_iou_thresh 0.88, stability 0.92, box NMS 0.4, one crop layer
(crop NMS 0.4, points downscaled by 2), min region 100 px; on a 320×320 px (1 m) RGB patch; masks under 50 px
dropped; the 50 largest kept.

Checkpoints are loaded with ``torch.load(weights_only=True)`` and the architecture is read from the state dict:
MobileSAM ``vit_t`` (TinyViT encoder from ``mobilesam-mirror``; prompt encoder and mask decoder from
``segment-anything``) or the official ``vit_b``/``vit_l``/``vit_h``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .sam_decoder import DECODER_BATCH_CPU, exact_generator

if TYPE_CHECKING:
    import torch
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

PATCH_SIZE_PX = 320
MIN_MASK_AREA_PX = 50
MAX_MASKS = 50

#: The paper's SamAutomaticMaskGenerator arguments.
PAPER_AMG_SETTINGS = {
    "points_per_side": 12,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.92,
    "box_nms_thresh": 0.4,
    "crop_n_layers": 1,
    "crop_nms_thresh": 0.4,
    "crop_n_points_downscale_factor": 2,
    "min_mask_region_area": 100,
}

_VIT_DEPTHS = {12: "vit_b", 24: "vit_l", 32: "vit_h"}


class SAMError(ValueError):
    """A SAM checkpoint is missing, corrupt, or of another architecture."""


def detect_architecture(state_dict: Mapping[str, Any]) -> str:
    """``"vit_t"``, ``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` from a SAM state dict's image-encoder keys.

    Raises SAMError when the keys are not those of a SAM model.
    """
    keys = set(state_dict)
    if "image_encoder.patch_embed.seq.0.c.weight" in keys:
        return "vit_t"
    blocks = {int(k.split(".")[2]) for k in keys if k.startswith("image_encoder.blocks.")}
    if blocks and "mask_decoder.iou_token.weight" in keys:
        depth = max(blocks) + 1
        if depth in _VIT_DEPTHS:
            return _VIT_DEPTHS[depth]
    raise SAMError("The checkpoint is not a Segment Anything model (no SAM image encoder and mask decoder "
                   "weights). Give MobileSAM's mobile_sam.pt or an official SAM checkpoint (vit_b/vit_l/vit_h).")


def _build(architecture: str) -> Sam:
    from segment_anything import sam_model_registry
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if architecture != "vit_t":
        return sam_model_registry[architecture](checkpoint=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mobile_sam re-registers TinyViT names in timm, via deprecated paths
        from mobile_sam.modeling import TinyViT

    # MobileSAM's configuration (mobile_sam/build_sam.py: build_sam_vit_t).
    encoder = TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                      depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0,
                      drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
                      local_conv_size=3, layer_lr_decay=0.8)
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam(checkpoint: Path | str, device: torch.device | str = "cpu", architecture: str = "auto") -> Sam:
    """A SAM model in eval mode on ``device`` from a checkpoint file (a state dict, never unpickled objects).

    ``architecture``: ``auto`` (detected) or one of vit_t/vit_b/vit_l/vit_h, which must match the checkpoint.
    Raises SAMError for a missing, truncated or corrupt file, a non-SAM state dict, or a mismatch.
    """
    import torch

    try:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SAMError(f"SAM checkpoint {checkpoint} does not exist.") from None
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise SAMError(f"SAM checkpoint {checkpoint} is corrupt or truncated, or not a PyTorch state dict "
                       f"({type(error).__name__}: {str(error).splitlines()[0][:200]}).") from None
    if not isinstance(state, dict):
        raise SAMError(f"SAM checkpoint {checkpoint} does not hold a state dict.")
    detected = detect_architecture(state)
    if architecture not in ("auto", detected):
        raise SAMError(f"SAM checkpoint {checkpoint} is a {detected} model, not the requested {architecture}.")
    model = _build(detected)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise SAMError(f"SAM checkpoint {checkpoint} does not fit the {detected} architecture: "
                       f"{str(error).splitlines()[0][:300]}") from None
    return model.to(device).eval()


@dataclass
class PatchMasks:
    """The kept SAM masks of one patch, largest first.

    masks: bool (N, 320, 320); bbox: float32 (N, 4) as SAM's XYWH in pixels; predicted_iou, stability: float32 (N,).
    """

    masks: npt.NDArray[np.bool_]
    bbox: npt.NDArray[np.float32]
    predicted_iou: npt.NDArray[np.float32]
    stability: npt.NDArray[np.float32]
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.masks)


def _bfloat16(sam_model: Sam) -> Sam:
    """A shallow copy of ``sam_model`` whose image encoder and mask decoder run under bfloat16 autocast and
    hand back float32 (the rest of AMG, and numpy, need float32); the caller's model is left as it is."""
    import copy

    import torch

    class Autocast(torch.nn.Module):
        def __init__(self, module: torch.nn.Module, device_type: str) -> None:
            super().__init__()
            self.module, self.device_type = module, device_type

        def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
            with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
                out = self.module(*args, **kwargs)
            return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    fast = copy.copy(sam_model)
    fast._modules = dict(sam_model._modules)  # the copy gets its own submodule table, shared weights
    device_type = sam_model.device.type
    fast.image_encoder = Autocast(sam_model.image_encoder, device_type)
    fast.image_encoder.img_size = sam_model.image_encoder.img_size  # read by SamPredictor's resize
    fast.mask_decoder = Autocast(sam_model.mask_decoder, device_type)
    return fast


def _batched_predictor(sam_model: Sam) -> SamPredictor:
    """A ``SamPredictor`` whose ``set_image`` takes the next image embedding from ``queue`` when there is one:
    the embeddings of several crops and footprints are computed in one image-encoder batch beforehand, and the
    library's automatic mask generation then runs exactly as it would, crop by crop."""
    from segment_anything import SamPredictor

    class BatchedPredictor(SamPredictor):
        queue: list[tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]] = []

        def set_image(self, image: npt.NDArray[np.uint8], image_format: str = "RGB") -> None:
            if not self.queue:
                return super().set_image(image, image_format)
            self.reset_image()
            self.features, self.input_size, self.original_size = self.queue.pop(0)
            self.is_image_set = True

    return BatchedPredictor(sam_model)


ENCODER_BACKENDS = ("auto", "openvino", "pytorch")


def _weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes and float bytes): the key of its converted form."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _OpenVINOEncoder:
    """SAM's image encoder converted to OpenVINO (fp32 weights and fp32 inference) and compiled for the CPU: one
    (1, 3, 1024, 1024) float32 preprocessed crop → its (1, 256, 64, 64) float32 embedding as a torch tensor.

    On the development CPU the 5 crops of a patch take 2.2 s instead of PyTorch's 5.9 s; the embeddings differ
    from PyTorch's by at most 3e-6 (mean 2e-7, against a mean magnitude of 0.066), and the masks of the tested
    real patches are the library's, pixel for pixel (``bench/bench_sam.py``, ``tests/test_sam_tiles.py``). The
    IR is built once per checkpoint (about 7 s) in the user's cache, keyed by the encoder's weights."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        from ..models.backends import OpenVINORunner, convert
        from ..runtime.assets import cache_dir

        size: int = getattr(encoder, "img_size")  # TinyViT and ImageEncoderViT: the square input side, px
        self.xml = cache_dir() / "openvino" / f"sam-image-encoder-{_weights_sha256(encoder)[:16]}.xml"
        if not self.xml.exists():
            convert(encoder, self.xml, (1, 3, size, size))  # batch 1: TinyViT's traced shapes are static
        self.runner = OpenVINORunner(self.xml, "f32")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.runner(batch.cpu().numpy()))


def image_encoder(sam_model: Sam, backend: str = "auto") -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(callable (1, 3, S, S) float32 preprocessed crop → (1, 256, 64, 64) float32 torch tensor, description).

    backend: ``auto`` (OpenVINO on the CPU when it is installed and converts the encoder, else PyTorch),
    ``openvino`` or ``pytorch``. Raises SAMError for an unknown backend, or for ``openvino`` on a GPU, without
    the package, or when the conversion fails.
    """
    from ..models.backends import openvino_available

    if backend not in ENCODER_BACKENDS:
        raise SAMError(f"SAM encoder backend '{backend}' is not one of {', '.join(ENCODER_BACKENDS)}.")
    usable = sam_model.device.type == "cpu" and openvino_available()
    if backend == "openvino" and not usable:
        raise SAMError("The SAM encoder runs on OpenVINO on the CPU only, with the 'openvino' package installed.")
    if backend == "pytorch" or not usable:
        return sam_model.image_encoder, f"pytorch on {sam_model.device}"
    try:
        return _OpenVINOEncoder(sam_model.image_encoder), "openvino f32 on cpu"
    except Exception as error:  # a checkpoint whose encoder OpenVINO cannot convert: PyTorch gives the same masks
        if backend == "openvino":
            raise SAMError(f"OpenVINO could not convert the SAM image encoder: {str(error)[:300]}") from None
        return sam_model.image_encoder, "pytorch on cpu (OpenVINO could not convert the encoder)"


class MaskGenerator:
    """Automatic mask generation on 320×320 uint8 RGB patches with the paper's settings (overridable).

    ``many(rgbs)`` segments several patches with the image encoder batched over all their crops (the paper's
    settings have a crop layer: 5 encoder passes per patch) and gives the same masks as one patch at a time.
    ``fast=True`` ("fast SAM", off by default) runs encoder and decoder under bfloat16 autocast where the device
    supports it: not the paper-exact masks (bench/bench_sam.py measures how many match).
    ``encoder``: the image encoder's backend (``image_encoder``; auto = OpenVINO on the CPU); ``engine`` says
    which runs. Raises SAMError for an encoder backend that cannot run.
    """

    def __init__(self, sam_model: Sam, fast: bool = False, encoder: str = "auto", **settings: Any) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        self.settings = {**PAPER_AMG_SETTINGS, **settings}
        self.fast = fast
        if fast:
            self._generator = SamAutomaticMaskGenerator(_bfloat16(sam_model), **self.settings)
            self._encoder, self.engine = self._generator.predictor.model.image_encoder, "pytorch bfloat16 autocast"
        else:
            batch = self.settings.get("points_per_batch", 64 if sam_model.device.type == "cuda" else DECODER_BATCH_CPU)
            self._generator = exact_generator(sam_model, self.settings, batch)
            self._encoder, self.engine = image_encoder(sam_model, encoder)
        self._generator.predictor = _batched_predictor(self._generator.predictor.model)

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> PatchMasks:
        """Masks of ``rgb`` (uint8, (320, 320, 3)), filtered as the paper does. Zero masks is a legal result."""
        return self.many([rgb])[0]

    def _encode(self, rgbs: Sequence[npt.NDArray[np.uint8]]) -> None:
        """Queue the image embeddings of every crop of every patch, in the order AMG will ask for them."""
        import torch
        from segment_anything.utils.amg import generate_crop_boxes

        predictor = self._generator.predictor
        crops = []
        for rgb in rgbs:
            boxes, _ = generate_crop_boxes(rgb.shape[:2], self._generator.crop_n_layers,
                                           self._generator.crop_overlap_ratio)
            crops += [rgb[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]
        transformed = [torch.as_tensor(predictor.transform.apply_image(crop), device=predictor.device)
                       .permute(2, 0, 1).contiguous() for crop in crops]
        batch = [predictor.model.preprocess(t[None]) for t in transformed]
        if predictor.device.type == "cuda":  # one batch pays on a GPU; on the CPU one crop a call is faster
            features = self._encoder(torch.cat(batch)).float()  # (5.7 s against 8.2 s for a patch's 5 crops)
        else:
            features = torch.cat([self._encoder(crop).float() for crop in batch])
        predictor.queue[:] = [(features[i:i + 1], tuple(t.shape[-2:]), crop.shape[:2])
                              for i, (t, crop) in enumerate(zip(transformed, crops))]

    def many(self, rgbs: Sequence[npt.NDArray[np.uint8]], paper_filter: bool = True) -> list[PatchMasks]:
        """PatchMasks of each uint8 (320, 320, 3) patch of ``rgbs``; ``paper_filter=False`` keeps every AMG mask
        (a shared-segmentation tile, ``sam_tiles``: the paper's rules apply to each footprint's composed masks)."""
        import torch

        for rgb in rgbs:
            if rgb.shape != (PATCH_SIZE_PX, PATCH_SIZE_PX, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"expected a uint8 (320, 320, 3) patch, got {rgb.dtype} {rgb.shape}")
        with torch.inference_mode():
            self._encode(rgbs)
            results = [self._generator.generate(rgb) for rgb in rgbs]
        self._generator.predictor.queue.clear()
        return [self._filter(records, paper_filter) for records in results]

    def _filter(self, records: list[dict[str, Any]], paper_filter: bool = True) -> PatchMasks:
        records = sorted(records, key=lambda r: -r["area"])
        if paper_filter:
            records = [r for r in records if r["area"] >= MIN_MASK_AREA_PX][:MAX_MASKS]
        empty = np.zeros((0,), np.float32)
        if not records:
            return PatchMasks(np.zeros((0, PATCH_SIZE_PX, PATCH_SIZE_PX), bool), np.zeros((0, 4), np.float32),
                              empty, empty, self.settings)
        return PatchMasks(
            masks=np.stack([r["segmentation"] for r in records]).astype(bool),
            bbox=np.array([r["bbox"] for r in records], np.float32),
            predicted_iou=np.array([r["predicted_iou"] for r in records], np.float32),
            stability=np.array([r["stability_score"] for r in records], np.float32),
            settings=self.settings,
        )
