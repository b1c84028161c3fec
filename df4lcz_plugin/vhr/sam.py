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


def _bfloat16(sam_model):
    """A shallow copy of ``sam_model`` whose image encoder and mask decoder run under bfloat16 autocast and
    hand back float32 (the rest of AMG, and numpy, need float32); the caller's model is left as it is."""
    import copy

    import torch

    class Autocast(torch.nn.Module):
        def __init__(self, module, device_type):
            super().__init__()
            self.module, self.device_type = module, device_type

        def forward(self, *args, **kwargs):
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


def _batched_predictor(sam_model):
    """A ``SamPredictor`` whose ``set_image`` takes the next image embedding from ``queue`` when there is one:
    the embeddings of several crops and footprints are computed in one image-encoder batch beforehand, and the
    library's automatic mask generation then runs exactly as it would, crop by crop."""
    from segment_anything import SamPredictor

    class BatchedPredictor(SamPredictor):
        queue = []

        def set_image(self, image, image_format="RGB"):
            if not self.queue:
                return super().set_image(image, image_format)
            self.reset_image()
            self.features, self.input_size, self.original_size = self.queue.pop(0)
            self.is_image_set = True

    return BatchedPredictor(sam_model)


ENCODER_BACKENDS = ("auto", "openvino", "pytorch")


def _weights_sha256(module):
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

    def __init__(self, encoder):
        from ..models.backends import OpenVINORunner, convert
        from ..assets import cache_dir

        size = encoder.img_size
        xml = cache_dir() / "openvino" / f"sam-image-encoder-{_weights_sha256(encoder)[:16]}.xml"
        if not xml.exists():
            convert(encoder, xml, (1, 3, size, size))  # batch 1: TinyViT's traced shapes are static
        self.runner = OpenVINORunner(xml, "f32")

    def __call__(self, batch):
        import torch

        return torch.from_numpy(self.runner(batch.cpu().numpy()))


def image_encoder(sam_model, backend="auto"):
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


#: Prompts per mask-decoder call on the CPU: the decoder's image-side tensors (prompts × 4096 × 256 floats) stay
#: in cache, faster per prompt than the library's 64 here (bench/bench_sam.py). The masks are the same; the scores
#: come from matrix products over another batch, so they may differ in float32's last bits (measured ≤ 4e-7).
DECODER_BATCH_CPU = 4


def _attention(attention, q, k, v):
    """``segment_anything.modeling.transformer.Attention.forward`` after the input projections: q, k, v already
    split into heads (a batch of 1 broadcasts)."""
    import math

    import torch

    attn = q @ k.permute(0, 1, 3, 2)
    attn = torch.softmax(attn / math.sqrt(q.shape[-1]), dim=-1)
    return attention.out_proj(attention._recombine_heads(attn @ v))


class _SharedFirstLayer:
    """SAM's ``TwoWayTransformer`` for many point prompts on one image, with the first layer's image side done
    once: there the image tokens (embedding + dense no-mask embedding) and their positional encoding are the same
    for every prompt, so their key/value projections (tokens → image) and query projection (image → tokens) are
    computed for one prompt and broadcast. Every operation is the library's own (TwoWayAttentionBlock with
    ``skip_first_layer_pe``), on the same numbers, so the outputs are identical; the second layer and the final
    attention run per prompt, as in the library (segment_anything/modeling/transformer.py)."""

    def __init__(self, transformer):
        if not transformer.layers[0].skip_first_layer_pe:
            raise ValueError("the SAM transformer's first layer adds the query PE; the shared path does not apply")
        self.transformer = transformer
        self._image = None

    def prepare(self, image_embedding, image_pe):
        """The per-image tensors: image_embedding (1, C, H, W) with the dense embedding added, image_pe likewise."""
        layer = self.transformer.layers[0]
        to_image, to_tokens = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        k = keys + key_pe
        self._image = (keys, key_pe,
                       to_image._separate_heads(to_image.k_proj(k), to_image.num_heads),
                       to_image._separate_heads(to_image.v_proj(keys), to_image.num_heads),
                       to_tokens._separate_heads(to_tokens.q_proj(k), to_tokens.num_heads))

    def __call__(self, point_embedding):
        """(queries (B, T, C), keys (B, HW, C)) as ``TwoWayTransformer.forward`` gives them for the prepared image."""
        keys, key_pe, k_image, v_image, q_image = self._image
        layer, b = self.transformer.layers[0], point_embedding.shape[0]
        queries = layer.norm1(layer.self_attn(q=point_embedding, k=point_embedding, v=point_embedding))
        to_image = layer.cross_attn_token_to_image
        q = to_image._separate_heads(to_image.q_proj(queries + point_embedding), to_image.num_heads)
        queries = layer.norm2(queries + _attention(to_image, q, k_image.expand(b, -1, -1, -1),
                                                   v_image.expand(b, -1, -1, -1)))
        queries = layer.norm3(queries + layer.mlp(queries))
        to_tokens = layer.cross_attn_image_to_token
        k = to_tokens._separate_heads(to_tokens.k_proj(queries + point_embedding), to_tokens.num_heads)
        v = to_tokens._separate_heads(to_tokens.v_proj(queries), to_tokens.num_heads)
        keys = layer.norm4(keys + _attention(to_tokens, q_image.expand(b, -1, -1, -1), k, v))
        key_pe = key_pe.expand(b, -1, -1)
        for block in self.transformer.layers[1:]:
            queries, keys = block(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)
        final = self.transformer.final_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
        return self.transformer.norm_final_attn(queries + final), keys


def _exact_generator(sam_model, settings, decoder_batch):
    """A ``SamAutomaticMaskGenerator`` with ``settings`` that gives its exact masks with less work.

    The library decodes every prompt to three 256² mask logits, upsamples all of them to 1024² and then to the
    crop's own size, and only then drops those under ``pred_iou_thresh`` (about 60 % with the paper's settings).
    The predicted IoU comes from the decoder's transformer alone, so here the transformer runs on every prompt
    (its first layer's image side once per crop, ``_SharedFirstLayer``), and the mask upscaling, the
    hypernetwork product and the upsampling (``Sam.postprocess_masks``) only on the prompts with a mask above
    the threshold: the same operations on a subset of the batch, hence the same masks (scores to float32
    rounding, ``DECODER_BATCH_CPU``). Everything after (stability score, boxes, crop-edge filter, RLE, NMS, small regions) is the
    library's own code (``segment_anything.utils.amg``). ``decoder_batch`` prompts go through the decoder per
    call (the library's ``points_per_batch``; the masks do not depend on it).
    """
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (MaskData, batched_mask_to_box, calculate_stability_score,
                                            is_box_near_crop_edge, mask_to_rle_pytorch, uncrop_masks)

    class ExactGenerator(SamAutomaticMaskGenerator):
        def _decode(self, in_points, in_labels):
            """(masks (P', 3, h, w) logits at the crop's size, iou_preds (P', 3), kept prompt indices (P',))."""
            model = self.predictor.model
            decoder = model.mask_decoder
            sparse, dense = model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
            # MaskDecoder.predict_masks, split after the transformer (segment_anything/modeling/mask_decoder.py).
            tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
            tokens = torch.cat((tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
            if self._prepared is not self.predictor.features:  # a new crop: its image side of layer 1, once
                # No mask prompt: the dense embedding is the no-mask embedding, the same for every prompt.
                self._transformer.prepare(self.predictor.features + dense[:1], model.prompt_encoder.get_dense_pe())
                self._prepared = self.predictor.features
            b, (_, c, h, w) = tokens.shape[0], self.predictor.features.shape
            hs, src = self._transformer(tokens)
            iou_preds = decoder.iou_prediction_head(hs[:, 0, :])[:, 1:]  # multimask output: tokens 1–3
            kept = torch.nonzero((iou_preds > self.pred_iou_thresh).any(1) if self.pred_iou_thresh > 0.0
                                 else torch.ones(b, dtype=torch.bool, device=hs.device))[:, 0]
            if len(kept) == 0:
                return iou_preds.new_zeros((0, 3, *self.predictor.original_size)), iou_preds[kept], kept
            upscaled = decoder.output_upscaling(src[kept].transpose(1, 2).view(len(kept), c, h, w))
            hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](hs[kept, 1 + i, :])
                                    for i in range(decoder.num_mask_tokens)], dim=1)
            n, c, h, w = upscaled.shape
            low_res = (hyper_in @ upscaled.view(n, c, h * w)).view(n, -1, h, w)[:, 1:]
            masks = model.postprocess_masks(low_res, self.predictor.input_size, self.predictor.original_size)
            return masks, iou_preds[kept], kept

        def _process_batch(self, points, im_size, crop_box, orig_size):
            # SamAutomaticMaskGenerator._process_batch (segment-anything 1.0) with _decode for predict_torch.
            orig_h, orig_w = orig_size
            transformed_points = self.predictor.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(transformed_points, device=self.predictor.device)
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, kept = self._decode(in_points[:, None, :], in_labels[:, None])
            data = MaskData(masks=masks.flatten(0, 1), iou_preds=iou_preds.flatten(0, 1),
                            points=torch.as_tensor(points[kept.cpu().numpy()].repeat(masks.shape[1], axis=0)))
            del masks
            if self.pred_iou_thresh > 0.0:
                data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(
                data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset)
            if self.stability_score_thresh > 0.0:
                data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > self.predictor.model.mask_threshold
            data["boxes"] = batched_mask_to_box(data["masks"])
            keep_mask = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep_mask):
                data.filter(keep_mask)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            return data

    generator = ExactGenerator(sam_model, **settings)
    generator.points_per_batch = decoder_batch
    generator._transformer, generator._prepared = _SharedFirstLayer(sam_model.mask_decoder.transformer), None
    return generator


class MaskGenerator:
    """Automatic mask generation on 320×320 uint8 RGB patches with the paper's settings (overridable).

    ``many(rgbs)`` segments several patches with the image encoder batched over all their crops (the paper's
    settings have a crop layer: 5 encoder passes per patch) and gives the same masks as one patch at a time.
    ``fast=True`` ("fast SAM", off by default) runs encoder and decoder under bfloat16 autocast where the device
    supports it: not the paper-exact masks (bench/bench_sam.py measures how many match).
    ``encoder``: the image encoder's backend (``image_encoder``; auto = OpenVINO on the CPU); ``engine`` says
    which runs. Raises SAMError for an encoder backend that cannot run.
    """

    def __init__(self, sam_model, fast=False, encoder="auto", **settings):
        from segment_anything import SamAutomaticMaskGenerator

        self.settings = {**PAPER_AMG_SETTINGS, **settings}
        self.fast = fast
        if fast:
            self._generator = SamAutomaticMaskGenerator(_bfloat16(sam_model), **self.settings)
            self._encoder, self.engine = self._generator.predictor.model.image_encoder, "pytorch bfloat16 autocast"
        else:
            batch = self.settings.get("points_per_batch", 64 if sam_model.device.type == "cuda" else DECODER_BATCH_CPU)
            self._generator = _exact_generator(sam_model, self.settings, batch)
            self._encoder, self.engine = image_encoder(sam_model, encoder)
        self._generator.predictor = _batched_predictor(self._generator.predictor.model)

    def __call__(self, rgb):
        """Masks of ``rgb`` (uint8, (320, 320, 3)), filtered as the paper does. Zero masks is a legal result."""
        return self.many([rgb])[0]

    def _encode(self, rgbs):
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

    def many(self, rgbs, paper_filter=True):
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

    def _filter(self, records, paper_filter=True):
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
