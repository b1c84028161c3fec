"""Shared segmentation and the exact fast SAM step on the real Zürich orthophoto (SWISSIMAGE © swisstopo):
SAM once per 320 m tile, footprints composed from their tiles; the fast path against segment-anything's own
generator."""

import numpy as np
import pytest

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.vhr import graph, imagery, sam, sam_decoder, sam_tiles
from df4lcz_plugin.vhr.graph_cache import GraphCache
from df4lcz_plugin.vhr.stream import FootprintGraphs

from conftest import ZURICH

#: A 320 m footprint over the orthophoto (LV95; x 2679062.5–2679500, y 1247700–1248000), 94 % covered: it
#: overlaps the tiles on both sides of the seam at x = 2679360 and the empty tiles above y = 1248000.
FOOTPRINT = (2679100.0, 1247690.0, 2679420.0, 1248010.0)
TILES_RULE = {**graph.DEFAULT_GRAPH_RULE, "segmentation": "tiles"}
#: Reduced AMG settings with enough masks that some meet the seam (few do: SAM's masks avoid a patch's border).
SEAM_AMG = {"points_per_side": 8, "crop_n_layers": 0}


@pytest.fixture(scope="module")
def mobile_sam():
    return sam.load_sam(assets.fetch_member(assets.MOBILE_SAM))


def _wkt():
    return imagery.open_vhr(ZURICH).dataset.GetProjection()


def test_exact_fast_path_gives_the_reference_masks(mobile_sam):
    """The fast path (image encoder on OpenVINO, one crop a call; the folded decoder transformer on every prompt,
    mask upscaling and upsampling only where a mask passes the predicted-IoU threshold, 4 prompts per decoder
    call) against SamAutomaticMaskGenerator on PyTorch, mask by mask, on two real patches with a crop layer (5
    crops each)."""
    from segment_anything import SamAutomaticMaskGenerator

    source = imagery.open_vhr(ZURICH)
    settings = {"points_per_side": 6, "crop_n_layers": 1}
    generator = sam.MaskGenerator(mobile_sam, **settings)
    assert generator.engine == "openvino f32 on cpu"
    library = SamAutomaticMaskGenerator(mobile_sam, **generator.settings)
    assert generator._generator.points_per_batch == sam_decoder.DECODER_BATCH_CPU != library.points_per_batch
    for x0 in (2679062.5, 2679180.0):
        rgb, _ = imagery.read_patch(source, (x0, 1247680.0, x0 + 320, 1248000.0), source.dataset.GetProjection())
        reference = generator._filter(library.generate(rgb), paper_filter=False)
        fast = generator.many([rgb], paper_filter=False)[0]
        assert len(reference) == len(fast) > 5
        assert np.array_equal(reference.masks, fast.masks) and np.array_equal(reference.bbox, fast.bbox)
        # The scores come from other matrix products (OpenVINO's encoder; the folded attentions sum in another
        # order), so they may differ in float32's last bits (measured ≤ 6e-6) while every mask is the same.
        assert np.abs(reference.predicted_iou - fast.predicted_iou).max() < 1e-4
        assert np.abs(reference.stability - fast.stability).max() < 1e-4


@pytest.fixture(scope="module")
def decoded(mobile_sam):
    """A real patch's image embedding and 6 one-point prompts through segment-anything's own TwoWayTransformer:
    (image side with the dense no-mask embedding, its positional encoding, prompt tokens, library token outputs
    hs (6, T, C), library image tokens (6, 4096, C))."""
    import torch
    from segment_anything import SamPredictor

    source = imagery.open_vhr(ZURICH)
    rgb, _ = imagery.read_patch(source, FOOTPRINT, source.dataset.GetProjection())
    predictor, decoder = SamPredictor(mobile_sam), mobile_sam.mask_decoder
    with torch.inference_mode():
        predictor.set_image(rgb)
        points = torch.tensor([[[100.0, 80.0]], [[500.0, 520.0]], [[900.0, 40.0]], [[10.0, 1000.0]],
                               [[640.0, 300.0]], [[333.0, 777.0]]])
        sparse, dense = mobile_sam.prompt_encoder(points=(points, torch.ones(6, 1, dtype=torch.int)), boxes=None,
                                                  masks=None)
        tokens = sam_decoder.prompt_tokens(decoder, sparse)
        image_pe = mobile_sam.prompt_encoder.get_dense_pe()
        hs, keys = decoder.transformer(predictor.features.expand(6, -1, -1, -1) + dense, image_pe.expand(6, -1, -1, -1),
                                       tokens)
    return predictor.features + dense[:1], image_pe, tokens, hs, keys


def test_folded_transformer_equals_the_library_transformer(mobile_sam, decoded):
    """``sam_decoder.PromptTransformer`` against segment-anything's TwoWayTransformer on a real patch's image
    embedding and 6 one-point prompts: every token and image-token output within float32 rounding."""
    import torch

    image, image_pe, tokens, hs, keys = decoded
    with torch.inference_mode():
        folded = sam_decoder.PromptTransformer(mobile_sam.mask_decoder.transformer)
        folded.prepare(image, image_pe)
        queries, folded_keys = folded.layers(tokens)
        folded_hs = folded.final(queries, folded_keys, tokens, list(range(5)))
    assert folded_keys.shape == keys.shape and folded_hs.shape == hs[:, :5].shape
    assert (folded_keys - keys).abs().max() < 1e-4 and (folded_hs - hs[:, :5]).abs().max() < 1e-4
    assert keys.abs().mean() > 0.05 and hs.abs().mean() > 0.1  # real outputs, not zeros


def test_per_token_upscaling_equals_the_library_upscaling(mobile_sam, decoded, monkeypatch):
    """``sam_decoder.MaskUpscaler`` against ``MaskDecoder.output_upscaling`` and the hypernetwork product as
    ``MaskDecoder.predict_masks`` does them, on the library transformer's outputs for a real patch: the kept
    rows' 256 × 256 logits within float32 rounding, the same sign everywhere, and the same in steps of image tokens
    that do not divide the grid; a non-SAM upscaling is refused."""
    import torch

    decoder, (_, _, _, hs, keys) = mobile_sam.mask_decoder, decoded
    rows = torch.tensor([[True, False, True], [False, False, False], [False, True, False], [True, True, True],
                         [False, False, True], [True, False, False]])
    with torch.inference_mode():
        hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(1, 4)], dim=1)
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(6, -1, 64, 64))
        library = (hyper_in @ upscaled.flatten(2)).view(6, 3, 256, 256)[rows]
        per_token = sam_decoder.MaskUpscaler(decoder.output_upscaling)(keys, hyper_in, (64, 64), rows)
        default_chunk = sam_decoder.UPSCALING_CHUNK
        monkeypatch.setattr(sam_decoder, "UPSCALING_CHUNK", 1000)  # 4 steps of 1000 tokens and one of 96
        uneven = sam_decoder.MaskUpscaler(decoder.output_upscaling)(keys, hyper_in, (64, 64), rows)
    assert default_chunk < 64 * 64 and (uneven - per_token).abs().max() < 1e-5
    assert per_token.shape == library.shape == (8, 256, 256)
    assert (per_token - library).abs().max() < 1e-4 < library.abs().mean()
    assert torch.equal(per_token > 0, library > 0) and 0.01 < (library > 0).float().mean() < 0.99
    with pytest.raises(ValueError, match="not SAM's"):
        sam_decoder.MaskUpscaler(torch.nn.Sequential(*list(decoder.output_upscaling)[:3]))


def test_the_sam_encoder_backend_is_checked(mobile_sam):
    with pytest.raises(sam.SAMError, match="not one of auto, openvino, pytorch"):
        sam.MaskGenerator(mobile_sam, encoder="onnx")
    assert sam.MaskGenerator(mobile_sam, encoder="pytorch").engine == "pytorch on cpu"


def _by_hand(footprint, tiles):
    """The composed masks, computed the plain way: the 2 × 2 tiles as one 640 × 640 mosaic, each mask placed
    in it, pieces joined across a seam where their seam pixels overlap with IoU ≥ 0.5 (best pairs first, each
    mask once per seam), the footprint's window cut out, < 50 px dropped, the 50 largest kept."""
    keys = sorted(tiles, key=lambda t: (t[1], t[0]))
    i0, j0 = keys[0]
    pieces = []  # (tile, index, mosaic mask)
    for tile in keys:
        for index, mask in enumerate(tiles[tile].masks):
            canvas = np.zeros((640, 640), bool)
            r, c = (tile[1] - j0) * 320, (tile[0] - i0) * 320
            canvas[r:r + 320, c:c + 320] = mask
            pieces.append((tile, index, canvas))
    group = {(t, i): (t, i) for t, i, _ in pieces}

    def root(node):
        while group[node] != node:
            node = group[node]
        return node

    for a_tile in keys:
        for b_tile, axis in (((a_tile[0] + 1, a_tile[1]), 1), ((a_tile[0], a_tile[1] + 1), 0)):
            if b_tile not in tiles:
                continue
            candidates = []
            for i, a in enumerate(tiles[a_tile].masks):
                for j, b in enumerate(tiles[b_tile].masks):
                    edge_a, edge_b = (a[:, -1], b[:, 0]) if axis == 1 else (a[-1, :], b[0, :])
                    union = (edge_a | edge_b).sum()
                    if union and (edge_a & edge_b).sum() / union >= 0.5:
                        candidates.append((-(edge_a & edge_b).sum() / union, i, j))
            used_a, used_b = set(), set()
            for _, i, j in sorted(candidates):
                if i not in used_a and j not in used_b:
                    used_a.add(i)
                    used_b.add(j)
                    group[root((b_tile, j))] = root((a_tile, i))
    objects = {}
    for tile, index, canvas in pieces:
        objects.setdefault(root((tile, index)), np.zeros((640, 640), bool))
        objects[root((tile, index))] |= canvas
    x0, r0 = int(round(footprint[0])), int(round(-footprint[3]))
    top, left = r0 - j0 * 320, x0 - i0 * 320
    cut = [m[top:top + 320, left:left + 320] for m in objects.values()]
    cut = sorted((m for m in cut if m.sum() >= 50), key=lambda m: -m.sum())[:50]
    boxes = []
    for m in cut:
        rows, cols = np.nonzero(m)
        boxes.append([cols.min(), rows.min(), cols.max() - cols.min(), rows.max() - rows.min()])
    return np.array(cut), np.array(boxes, np.float32)


def test_composed_graph_equals_the_one_built_by_hand(mobile_sam, tmp_path):
    """A footprint's graph in shared segmentation equals the graph built by hand from the same tiles' masks
    (SAM run here on each tile) and the footprint's own pixels."""
    wkt = _wkt()
    tiles = sam_tiles.footprint_tiles(FOOTPRINT)
    assert len(tiles) == 4
    source = imagery.open_vhr(ZURICH)
    generator = sam.MaskGenerator(mobile_sam, **SEAM_AMG)
    masks = {}
    for tile in tiles:
        rgb, coverage = imagery.read_patch(source, sam_tiles.tile_bounds(tile), wkt)
        masks[tile] = generator.many([rgb], paper_filter=False)[0] if coverage else sam_tiles.no_masks()
    assert sum(len(m) > 0 for m in masks.values()) == 2  # the two tiles under the imagery
    expected_masks, expected_boxes = _by_hand(FOOTPRINT, masks)
    joined = sum(len(sam_tiles.seam_joins(masks[a], masks[b], 1)) for a, b in zip(tiles[2:], tiles[3:]))
    assert joined >= 1  # an object cut by the seam at x = 2679360 was joined
    rgb, _ = imagery.read_patch(source, FOOTPRINT, wkt)
    expected = graph.build_graph(rgb, sam.PatchMasks(expected_masks, expected_boxes, np.zeros(0), np.zeros(0)))

    graphs = FootprintGraphs(ZURICH, wkt, amg_settings=SEAM_AMG, graph_rule=TILES_RULE,
                             cache=GraphCache(tmp_path / "cache"))
    composed = graphs.graph(FOOTPRINT)
    assert graphs.sam_runs == 2  # the empty tiles need no SAM
    assert composed.num_nodes == len(expected_masks) > 20
    assert np.array_equal(composed.x, expected.x)
    assert np.array_equal(composed.edge_index, expected.edge_index)
    assert np.array_equal(composed.edge_weight, expected.edge_weight)
    # A footprint 50 m to the right needs no more SAM: its tiles are in memory and in the cache.
    shifted = (FOOTPRINT[0] + 50, FOOTPRINT[1], FOOTPRINT[2] + 50, FOOTPRINT[3])
    assert graphs.graph(shifted).num_nodes > 10 and graphs.sam_runs == 2
    fresh = FootprintGraphs(ZURICH, wkt, amg_settings=SEAM_AMG, graph_rule=TILES_RULE,
                            cache=GraphCache(tmp_path / "cache"))
    near = (FOOTPRINT[0] + 20, FOOTPRINT[1], FOOTPRINT[2] + 20, FOOTPRINT[3])
    assert fresh.graph(near).num_nodes > 10 and fresh.sam_runs == 0  # the tiles come from the disk cache
    assert fresh.sam_runs_needed([near, FOOTPRINT]) == 0


def test_seam_joins_are_one_to_one():
    """FIXTURE (two hand-drawn 320 px tiles): a mask cut by the seam is joined to its other half, a nested
    mask touching the seam at the same rows to nothing (one-to-one), a mask away from the seam to nothing."""
    left, right = np.zeros((3, 320, 320), bool), np.zeros((1, 320, 320), bool)
    left[0, 100:200, 250:] = True  # the left half of a roof
    left[1, 120:180, 300:] = True  # a smaller object inside it, also at the seam
    left[2, 10:20, 10:20] = True
    right[0, 100:200, :40] = True  # the right half of the roof
    a = sam.PatchMasks(left, np.zeros((3, 4)), np.zeros(3), np.zeros(3))
    b = sam.PatchMasks(right, np.zeros((1, 4)), np.zeros(1), np.zeros(1))
    assert sam_tiles.seam_joins(a, b, axis=1) == [(0, 0)]
    assert sam_tiles.seam_joins(a, b, axis=0) == []
