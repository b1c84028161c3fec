"""The SAM step of DF4LCZ's high-resolution stream: Segment Anything masks of one 320 m patch.

Settings are the paper's (``ctrlovefly/DF4LCZ`` ``ins_gen.py``; ``shared/design/df4lcz_method.md`` §2): automatic
mask generation with a 12×12 point grid, pred_iou_thresh 0.88, stability 0.92, box NMS 0.4, one crop layer
(crop NMS 0.4, points downscaled by 2), min region 100 px; on a 320×320 px (1 m) RGB patch; masks under 50 px
dropped; the 50 largest kept.

Checkpoints are loaded with ``torch.load(weights_only=True)`` and the architecture is read from the state dict:
MobileSAM ``vit_t`` (TinyViT encoder from ``mobilesam-mirror``; prompt encoder and mask decoder from
``segment-anything``) or the official ``vit_b``/``vit_l``/``vit_h``.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

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


def detect_architecture(state_dict):
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


def _build(architecture):
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


def load_sam(checkpoint, device="cpu", architecture="auto"):
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

    masks: np.ndarray
    bbox: np.ndarray
    predicted_iou: np.ndarray
    stability: np.ndarray
    settings: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.masks)


class MaskGenerator:
    """Automatic mask generation on 320×320 uint8 RGB patches with the paper's settings (overridable)."""

    def __init__(self, sam_model, **settings):
        from segment_anything import SamAutomaticMaskGenerator

        self.settings = {**PAPER_AMG_SETTINGS, **settings}
        self._generator = SamAutomaticMaskGenerator(sam_model, **self.settings)

    def __call__(self, rgb):
        """Masks of ``rgb`` (uint8, (320, 320, 3)), filtered as the paper does. Zero masks is a legal result."""
        if rgb.shape != (PATCH_SIZE_PX, PATCH_SIZE_PX, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (320, 320, 3) patch, got {rgb.dtype} {rgb.shape}")
        import torch

        with torch.inference_mode():
            records = self._generator.generate(rgb)
        records = sorted((r for r in records if r["area"] >= MIN_MASK_AREA_PX), key=lambda r: -r["area"])[:MAX_MASKS]
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
