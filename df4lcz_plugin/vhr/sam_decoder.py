"""SAM's mask decoder for automatic mask generation: the library's masks with a fraction of its work on the CPU.

Automatic mask generation (AMG) decodes a few hundred one-point prompts against the same image embedding: the
paper's settings give 144 + 4 × 36 = 288 prompts per 320 m patch. The library runs the mask decoder's
``TwoWayTransformer`` (``segment_anything/modeling/transformer.py``) on a copy of the 64 × 64 = 4096 image tokens
for each prompt, projecting all 4096 tokens through every attention's 256 → 128 input projections, then
upscales the image tokens and upsamples three masks for every prompt, and only then drops the ~60 % under
``pred_iou_thresh``.

Here the same arithmetic is reordered, exact up to float32 rounding (a score or logit within rounding of a
threshold could fall the other way; on the tested real patches every mask and box is the library's):

- the first layer's image side (tokens + dense no-mask embedding, and its positional encoding) is the same for
  every prompt: its projections are computed once per crop;
- an attention of T = 7 prompt tokens on the N = 4096 image tokens projects the T tokens instead of the N:
  ``q·(W_k x + b_k) = (W_kᵀ q)·x + q·b_k``, where softmax over the image tokens drops the constant ``q·b_k``, and
  ``Σ a (W_v x + b_v) = W_v (Σ a x) + b_v`` since the weights sum to 1;
- an attention of the N image tokens on the T tokens folds ``q_proj`` into the T keys and ``out_proj`` into the T
  values (its bias shared out over the heads, whose weights each sum to 1);
- the final attention runs on the IoU token for every prompt and on the three multimask tokens only for the
  prompts kept; mask upscaling only for the prompts with a mask above the threshold, and upsampling
  (``Sam.postprocess_masks``) only for those masks;
- mask upscaling (``MaskDecoder.output_upscaling``: two 2 × 2 stride-2 transposed convolutions, LayerNorm2d and
  GELU) mixes no pixels: each image token becomes its own 4 × 4 block of the 256 × 256 mask through a per-token
  network. ``MaskUpscaler`` runs it as two matrix products on the tokens as the transformer leaves them
  (channels last), the LayerNorm2d as ``layer_norm`` on the last dimension, and rearranges the blocks into the
  mask once, after the hypernetwork's dot product, ``UPSCALING_CHUNK`` image tokens at a time so that a chunk's
  activations stay in the core's cache: 1.29–1.37× faster than the library's modules on real footprints
  (bench/bench_sam_decoder.py), the masks identical;
- the layers after the first form each prompt's ``keys + key_pe`` once, for both of their attentions.

This cuts the transformer's work per prompt from the library's 2.7 GFLOP (ten 4096 × 256 → 128 projections of
0.27 GFLOP each) to about 0.8 GFLOP; bench/bench_sam.py measures the seconds, and bench/bench_sam_decoder.py's floor
section the path's matrix products against this CPU's float32 rate.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.modeling import MaskDecoder, Sam, TwoWayTransformer
    from segment_anything.modeling.common import LayerNorm2d
    from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock
    from torch import nn

    #: The folded image side of a crop: keys, key_pe, and the first layer's per-head projections (``prepare``).
    PreparedImage = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

#: Prompts per decoder call on the CPU: the fastest of 1, 2, 4, 8 and 16 on the development CPU (9.1, 8.0 and
#: 9.9 s a patch for 2, 4 and 8). The masks do not depend on it.
DECODER_BATCH_CPU = 4

#: Image tokens per step of ``MaskUpscaler``: the fastest of 64–1024 on the development CPU (issue 28). On real
#: footprints the upscaling is 1.05–1.16× faster than with the whole 64 × 64 grid at once (bench_sam_decoder.py),
#: the masks the same.
UPSCALING_CHUNK = 256


def _by_head(linear: nn.Linear, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (H, d, C), bias (H, d)) of an attention's input projection C → H·d, split by head."""
    out, c = linear.weight.shape
    return linear.weight.view(heads, out // heads, c), linear.bias.view(heads, out // heads)


def _dot_image_tokens(x: torch.Tensor, keys: torch.Tensor, key_pe: torch.Tensor,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """``bias + x @ (keys + key_pe)ᵀ``: (B, M, N) for x (B, M, C), keys (B, N, C), key_pe (N, C), bias (B, M, 1)
    or None; the shared key_pe goes through one matrix product over all B·M rows instead of a (B, N, C) sum."""
    import torch

    b, m, c = x.shape
    pe_scores = (x.reshape(b * m, c) @ key_pe.T).view(b, m, -1)
    return torch.baddbmm(pe_scores if bias is None else bias + pe_scores, x, keys.transpose(1, 2))


def _tokens_to_image(attention: Attention, q_in: torch.Tensor, keys: torch.Tensor, key_pe: torch.Tensor,
                     keys_pe: torch.Tensor | None = None) -> torch.Tensor:
    """``attention(q=q_in, k=keys + key_pe, v=keys)`` (segment-anything ``Attention``) for q_in (B, T, C) tokens on
    keys (B, N, C) image tokens, key_pe (N, C), with k_proj and v_proj applied to the T side: (B, T, C).
    keys_pe: ``keys + key_pe`` when the caller has it (a layer's two attentions share it)."""
    import torch

    heads, (b, t, c) = attention.num_heads, q_in.shape
    w_k, _ = _by_head(attention.k_proj, heads)
    w_v, b_v = _by_head(attention.v_proj, heads)
    d = w_k.shape[1]
    q = attention.q_proj(q_in).view(b, t, heads, d)
    q_k = torch.einsum("bthd,hdc->bhtc", q, w_k).reshape(b, heads * t, c) / math.sqrt(d)
    scores = _dot_image_tokens(q_k, keys, key_pe) if keys_pe is None else q_k @ keys_pe.transpose(1, 2)
    weights = torch.softmax(scores, dim=-1)  # (B, H·T, N)
    mixed = (weights @ keys).view(b, heads, t, c)
    out = torch.einsum("bhtc,hdc->bthd", mixed, w_v) + b_v
    return attention.out_proj(out.reshape(b, t, heads * d))


def _image_to_tokens_scores(attention: Attention, keys_pe: torch.Tensor, k_in: torch.Tensor) -> torch.Tensor:
    """Scores (B, H, T, N) before softmax of ``attention(q=keys + key_pe, k=k_in, ...)``: the N image tokens with
    their PE, keys_pe (B, N, C), on the T tokens k_in (B, T, C), with q_proj applied to the T side."""
    import torch

    heads, (b, t, c) = attention.num_heads, k_in.shape
    w_q, b_q = _by_head(attention.q_proj, heads)
    k = attention.k_proj(k_in).view(b, t, heads, -1) / math.sqrt(w_q.shape[1])
    k_q = torch.einsum("bthd,hdc->bhtc", k, w_q).reshape(b, heads * t, c)
    bias = torch.einsum("bthd,hd->bht", k, b_q).reshape(b, heads * t, 1)
    return torch.baddbmm(bias, k_q, keys_pe.transpose(1, 2)).view(b, heads, t, -1)


def _image_to_tokens_residual(attention: Attention, keys: torch.Tensor, scores: torch.Tensor,
                              v_in: torch.Tensor) -> torch.Tensor:
    """keys (B, N, C) or (N, C) + the output of the image tokens' attention on the T tokens v_in (B, T, C), from
    its scores (B, H, T, N), with out_proj applied to the T values. A (B, N, C) ``keys`` is updated in place (the
    layers after the first own theirs); a shared (N, C) one is left as it is."""
    import torch

    heads, (b, t, _) = attention.num_heads, v_in.shape
    w_o = attention.out_proj.weight  # (C, H·d)
    v = attention.v_proj(v_in).view(b, t, heads, -1)
    v_o = torch.einsum("bthd,chd->bhtc", v, w_o.view(w_o.shape[0], heads, -1)) + attention.out_proj.bias / heads
    weights = torch.softmax(scores, dim=2).reshape(b, heads * t, -1)
    if keys.dim() == 3:
        return keys.baddbmm_(weights.transpose(1, 2), v_o.reshape(b, heads * t, -1))
    return torch.baddbmm(keys, weights.transpose(1, 2), v_o.reshape(b, heads * t, -1))


def _block(block: TwoWayAttentionBlock, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
           key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayAttentionBlock.forward`` (a layer after the first) on the folded attentions."""
    q = queries + query_pe
    queries = block.norm1(queries + block.self_attn(q=q, k=q, v=queries))
    keys_pe = keys + key_pe  # one sum per prompt instead of a (T·H, C) × (C, N) product in each attention
    queries = block.norm2(queries + _tokens_to_image(block.cross_attn_token_to_image, queries + query_pe, keys, key_pe,
                                                     keys_pe))
    queries = block.norm3(queries + block.mlp(queries))
    scores = _image_to_tokens_scores(block.cross_attn_image_to_token, keys_pe, queries + query_pe)
    return queries, block.norm4(_image_to_tokens_residual(block.cross_attn_image_to_token, keys, scores, queries))


def prompt_tokens(decoder: MaskDecoder, sparse: torch.Tensor) -> torch.Tensor:
    """``MaskDecoder.predict_masks``'s tokens (B, 5 + P, C) float32: the IoU token, the 4 mask tokens, then the
    sparse prompt embeddings (B, P, C) (a point and its padding point, P = 2)."""
    import torch

    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    return torch.cat((tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)


class PromptTransformer:
    """SAM's ``TwoWayTransformer`` for many point prompts on one image embedding, folded as the module docstring
    says: ``prepare`` once per crop, then ``layers`` and ``final`` per prompt batch.

    Raises ValueError for a transformer whose first layer adds the query PE (not SAM's).
    """

    def __init__(self, transformer: TwoWayTransformer) -> None:
        if not transformer.layers[0].skip_first_layer_pe:
            raise ValueError("the SAM transformer's first layer adds the query PE; the folded path does not apply")
        self.transformer = transformer
        self._image: PreparedImage | None = None

    def prepare(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> None:
        """image_embedding (1, C, 64, 64) float32 with the dense no-mask embedding added; image_pe (1, C, 64, 64),
        the prompt encoder's dense positional encoding."""
        layer = self.transformer.layers[0]
        to_image, to_tokens = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        keys = image_embedding.flatten(2)[0].T.contiguous()  # (N, C)
        key_pe = image_pe.flatten(2)[0].T.contiguous()
        with_pe = keys + key_pe

        def by_head(x: torch.Tensor, heads: int) -> torch.Tensor:  # (N, H·d) → (H, N, d)
            return x.view(len(x), heads, -1).transpose(0, 1)

        d = to_tokens.internal_dim // to_tokens.num_heads
        self._image = (keys, key_pe,
                       by_head(to_image.k_proj(with_pe), to_image.num_heads).transpose(1, 2).contiguous(),
                       by_head(to_image.v_proj(keys), to_image.num_heads).contiguous(),
                       (by_head(to_tokens.q_proj(with_pe), to_tokens.num_heads).transpose(1, 2) / math.sqrt(d))
                       .contiguous())

    def _image_side(self) -> PreparedImage:
        """The image side of the crop ``prepare`` was last given. Raises ValueError before any."""
        if self._image is None:
            raise ValueError("PromptTransformer.prepare must be called before layers and final")
        return self._image

    def layers(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries (B, T, C), keys (B, N, C)) after the transformer's layers, for tokens (B, T, C): the output,
        IoU and prompt tokens of B prompts."""
        import torch

        keys, key_pe, k_image, v_image, q_image = self._image_side()
        first, (b, t, _) = self.transformer.layers[0], tokens.shape
        # The first layer (skip_first_layer_pe): the image side is the prepared one, heads as the batch.
        queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
        to_image, to_tokens = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        heads = to_image.num_heads
        q = to_image.q_proj(queries + tokens).view(b * t, heads, -1).transpose(0, 1)  # (H, B·T, d)
        weights = torch.softmax(q @ k_image / math.sqrt(q.shape[-1]), dim=-1)
        queries = first.norm2(queries + to_image.out_proj((weights @ v_image).transpose(0, 1).reshape(b, t, -1)))
        queries = first.norm3(queries + first.mlp(queries))
        heads = to_tokens.num_heads
        k = to_tokens.k_proj(queries + tokens).view(b * t, heads, -1).transpose(0, 1)
        scores = (k @ q_image).view(heads, b, t, -1).transpose(0, 1)  # (B, H, T, N)
        keys = first.norm4(_image_to_tokens_residual(to_tokens, keys, scores, queries))
        for block in self.transformer.layers[1:]:
            queries, keys = _block(block, queries, keys, tokens, key_pe)
        return queries, keys

    def final(self, queries: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor,
              index: list[int]) -> torch.Tensor:
        """The final attention and norm for the tokens at ``index`` only (each token's row is independent):
        (B, len(index), C)."""
        transformer, q = self.transformer, queries[:, index]
        out = _tokens_to_image(transformer.final_attn_token_to_image, q + tokens[:, index], keys, self._image_side()[1])
        return transformer.norm_final_attn(q + out)


def _sam_upscaling(upscaling: nn.Sequential) -> tuple[nn.ConvTranspose2d, LayerNorm2d, nn.ConvTranspose2d]:
    """The two transposed convolutions and the LayerNorm2d of SAM's ``output_upscaling``. Raises ValueError for
    any other layout (module docstring of ``MaskUpscaler``)."""
    import torch
    from segment_anything.modeling.common import LayerNorm2d

    parts = list(upscaling)
    kinds = (torch.nn.ConvTranspose2d, LayerNorm2d, torch.nn.GELU, torch.nn.ConvTranspose2d, torch.nn.GELU)
    if len(parts) != len(kinds) or not all(isinstance(part, kind) for part, kind in zip(parts, kinds)):
        raise ValueError("the mask upscaling is not SAM's (ConvTranspose2d, LayerNorm2d, GELU, ConvTranspose2d, "
                         "GELU); the per-token path does not apply")
    first, norm, gelu, second, last_gelu = parts
    for conv in (first, second):
        shape = (conv.kernel_size, conv.stride, conv.padding, conv.output_padding, conv.dilation, conv.groups)
        if shape != ((2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1):
            raise ValueError("the mask upscaling's transposed convolutions are not 2 × 2 with stride 2")
    if (gelu.approximate, last_gelu.approximate) != ("none", "none"):
        raise ValueError("the mask upscaling's GELU is not the exact one")
    return cast("nn.ConvTranspose2d", first), cast("LayerNorm2d", norm), cast("nn.ConvTranspose2d", second)


def _as_matrix(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2 × 2 stride-2 transposed convolution as (weight (C_in, 4·C_out), bias (4·C_out,)), columns ordered
    (row offset, column offset, output channel)."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(weight.shape[1])
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous(), bias.repeat(4)


class MaskUpscaler:
    """SAM's ``output_upscaling`` and the hypernetwork's dot product, as per-token matrix products (module
    docstring): the same low-resolution mask logits to float32 rounding.

    Raises ValueError for an upscaling that is not SAM's (two kernel-2, stride-2 transposed convolutions with
    LayerNorm2d and exact GELU), whose blocks would not be independent per token.
    """

    def __init__(self, upscaling: nn.Sequential) -> None:
        first, norm, second = _sam_upscaling(upscaling)
        (self.w1, self.b1), (self.w2, self.b2) = _as_matrix(first), _as_matrix(second)
        self.c1, self.c2 = first.out_channels, second.out_channels
        self.norm_weight, self.norm_bias = norm.weight.detach(), norm.bias.detach()
        self.eps = float(norm.eps)

    def __call__(self, keys: torch.Tensor, hyper_in: torch.Tensor, grid: tuple[int, ...],
                 rows: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits (M, 4h, 4w) float32 for image tokens keys (K, h·w, C) (the transformer's
        output, row-major over the h × w grid), hypernetwork outputs hyper_in (K, 3, c2), and the bool (K, 3)
        ``rows`` to keep (M of them, prompt-major).

        Runs ``UPSCALING_CHUNK`` image tokens at a time: the per-token network's activations of a chunk (K × 256
        tokens × 16 sub-pixels × 32 channels, 2 MB for 4 prompts) stay in the caches instead of streaming 8.4 MB a
        prompt through memory; each logit is computed by the same operations either way."""
        import torch

        (h, w), n = grid, keys.shape[1]
        logits = torch.cat([torch.bmm(hyper_in, self._blocks(keys[:, start:start + UPSCALING_CHUNK]).transpose(1, 2))
                            for start in range(0, n, UPSCALING_CHUNK)], dim=2)  # (K, 3, h·w·16): (y, x, dy, dx, ey, ex)
        return logits[rows].view(-1, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, 4 * h, 4 * w)

    def _blocks(self, keys: torch.Tensor) -> torch.Tensor:
        """The upscaled features (K, S·16, c2) of image tokens keys (K, S, C): each token's 4 × 4 block."""
        import torch
        import torch.nn.functional as F

        x = torch.addmm(self.b1, keys.reshape(-1, keys.shape[-1]), self.w1).view(-1, self.c1)
        x = F.gelu(F.layer_norm(x, (self.c1,), self.norm_weight, self.norm_bias, self.eps))
        return F.gelu(torch.addmm(self.b2, x, self.w2).view(len(keys), -1, self.c2))


def exact_generator(sam_model: Sam, settings: dict[str, Any], decoder_batch: int) -> SamAutomaticMaskGenerator:
    """A ``SamAutomaticMaskGenerator`` with ``settings`` whose decoder is ``PromptTransformer`` and which
    upscales and upsamples only the masks above ``pred_iou_thresh``: the library's masks, in the library's order
    (scores to float32 rounding). Everything after the decoder (stability score, boxes, crop-edge filter, RLE,
    NMS, small regions) is the library's own code (``segment_anything.utils.amg``). ``decoder_batch`` prompts a
    decoder call (the library's ``points_per_batch``).
    """
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (MaskData, batched_mask_to_box, calculate_stability_score,
                                            is_box_near_crop_edge, mask_to_rle_pytorch, uncrop_masks)

    class ExactGenerator(SamAutomaticMaskGenerator):
        _transformer: PromptTransformer
        _upscaler: MaskUpscaler
        _prepared: torch.Tensor | None

        def _decode(self, in_points: torch.Tensor,
                    in_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(masks (M, h, w) logits at the crop's size, their predicted IoU (M,), their prompts (M,)) for the
            masks above pred_iou_thresh, prompt-major as the library's flatten(0, 1) then filter."""
            model = self.predictor.model
            decoder, features = model.mask_decoder, self.predictor.features
            sparse, dense = model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
            tokens = prompt_tokens(decoder, sparse)
            if self._prepared is not features:  # a new crop (no mask prompt: one dense no-mask embedding)
                self._transformer.prepare(features + dense[:1], model.prompt_encoder.get_dense_pe())
                self._prepared = features
            queries, keys = self._transformer.layers(tokens)
            iou_token = self._transformer.final(queries, keys, tokens, [0])[:, 0]
            iou_preds = decoder.iou_prediction_head(iou_token)[:, 1:]  # multimask output: mask tokens 1–3
            passed = (iou_preds > self.pred_iou_thresh if self.pred_iou_thresh > 0.0
                      else torch.ones_like(iou_preds, dtype=torch.bool))
            kept = torch.nonzero(passed.any(1))[:, 0]
            rows = torch.nonzero(passed)
            if len(kept) == 0:
                return iou_preds.new_zeros((0, *self.predictor.original_size)), iou_preds[passed], rows[:, 0]
            n_tokens = decoder.num_mask_tokens
            if len(kept) < len(keys):  # about half the calls keep every prompt: no copy of their image tokens
                queries, keys, tokens = queries[kept], keys[kept], tokens[kept]
            mask_tokens = self._transformer.final(queries, keys, tokens, list(range(2, 1 + n_tokens)))
            hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens[:, i - 1])
                                    for i in range(1, n_tokens)], dim=1)
            low_res = self._upscaler(keys, hyper_in, features.shape[-2:], passed[kept])
            masks = model.postprocess_masks(low_res[:, None], self.predictor.input_size, self.predictor.original_size)
            return masks[:, 0], iou_preds[passed], rows[:, 0]

        def _process_batch(self, points: npt.NDArray[np.float64], im_size: tuple[int, ...], crop_box: list[int],
                           orig_size: tuple[int, ...]) -> MaskData:
            # SamAutomaticMaskGenerator._process_batch (segment-anything 1.0) with _decode for predict_torch and
            # its pred_iou_thresh filter.
            orig_h, orig_w = orig_size
            transformed_points = self.predictor.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(transformed_points, device=self.predictor.device)
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, prompts = self._decode(in_points[:, None, :], in_labels[:, None])
            data = MaskData(masks=masks, iou_preds=iou_preds, points=torch.as_tensor(points[prompts.cpu().numpy()]))
            del masks
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
    generator._transformer, generator._prepared = PromptTransformer(sam_model.mask_decoder.transformer), None
    generator._upscaler = MaskUpscaler(sam_model.mask_decoder.output_upscaling)
    return generator
