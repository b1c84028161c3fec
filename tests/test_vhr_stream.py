"""The high-resolution stream on the real Zürich orthophoto (SWISSIMAGE © swisstopo): SAM step, object graphs,
the GCN (GCSConv identity, parameter count) and fusion."""

import numpy as np
import pytest
import torch

from df4lcz_plugin.mapping import fusion
from df4lcz_plugin.runtime import assets
from df4lcz_plugin.vhr import graph, imagery, sam
from df4lcz_plugin.models.gcn import ObjectGCN

from conftest import ZURICH, FAST_AMG


def test_gcn_parameter_count():
    assert sum(p.numel() for p in ObjectGCN().parameters()) == 5_073


def test_each_layer_is_gcsconv():
    """On random graphs each layer computes Â·X·W1 + X·W2 + b with Â = D^-1/2 A D^-1/2 (no self-loops)."""
    rng = np.random.default_rng(0)
    net = ObjectGCN()
    for trial in range(5):
        n = int(rng.integers(2, 30))
        a = rng.random((n, n)) < 0.3
        a = np.triu(a, 1)
        a = a | a.T
        edge_index, edge_weight = graph.normalised_edges(a)
        degree = a.sum(1)
        with np.errstate(divide="ignore"):
            d = np.where(degree > 0, 1 / np.sqrt(degree), 0.0)
        a_hat = torch.tensor(d[:, None] * a * d[None, :], dtype=torch.float32)
        x = torch.randn(n, 5)
        for layer in net.convs:
            w1, b = layer.lin_rel.weight, layer.lin_rel.bias
            w2 = layer.lin_root.weight
            with torch.no_grad():
                got = layer(x, torch.from_numpy(edge_index), torch.from_numpy(edge_weight))
                expected = a_hat @ x @ w1.T + x @ w2.T + b
            assert torch.allclose(got, expected, atol=1e-5), trial
            x = torch.relu(got)


@pytest.fixture(scope="module")
def mobile_sam():
    return sam.load_sam(assets.fetch_member(assets.MOBILE_SAM))


@pytest.fixture(scope="module")
def zurich_patch():
    source = imagery.open_vhr(ZURICH)
    gt = source.dataset.GetGeoTransform()
    bounds = (gt[0] + 100, gt[3] - 300 - 10, gt[0] + 420, gt[3] + 10)  # 320 m, 2 % outside the image
    return imagery.read_patch(source, bounds, source.dataset.GetProjection())


def test_real_sam_masks_make_a_graph(mobile_sam, zurich_patch):
    rgb, coverage = zurich_patch
    assert rgb.shape == (320, 320, 3) and 0.9 < coverage < 1.0
    masks = sam.MaskGenerator(mobile_sam, **FAST_AMG)(rgb)
    assert 5 <= len(masks) <= sam.MAX_MASKS
    areas = masks.masks.sum((1, 2))
    assert (areas >= sam.MIN_MASK_AREA_PX).all() and (np.diff(areas) <= 0).all()  # largest first
    g = graph.build_graph(rgb, masks)
    assert g.x.shape == (len(masks), 5) and g.x.min() >= 0 and g.x.max() <= 1
    # Node colour = mean RGB under the mask; centre = bbox centre / 320.
    first = masks.masks[0]
    assert np.allclose(g.x[0, :3], rgb[first].mean(0) / 255, atol=1e-5)
    x, y, w, h = masks.bbox[0]
    assert np.allclose(g.x[0, 3:], [(x + w / 2) / 320, (y + h / 2) / 320])
    # Edges: symmetric, no self-loops, exactly the node pairs within the radius rule.
    src, dst = g.edge_index
    assert (src != dst).all()
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((j, i) in pairs for i, j in pairs)
    centres = g.x[:, 3:]
    expected = {(i, j) for i in range(len(centres)) for j in range(len(centres))
                if i != j and np.linalg.norm(centres[i] - centres[j]) <= graph.DEFAULT_GRAPH_RULE["radius"]}
    assert pairs == expected


def test_sam_is_deterministic(mobile_sam, zurich_patch):
    rgb, _ = zurich_patch
    generator = sam.MaskGenerator(mobile_sam, **FAST_AMG)
    first, second = generator(rgb), generator(rgb)
    assert np.array_equal(first.masks, second.masks) and np.array_equal(first.bbox, second.bbox)


def test_batched_sam_equals_one_patch_at_a_time(mobile_sam, zurich_patch):
    """``many``: the image encoder batched over two real patches and their crops (a crop layer: 5 crops each)
    gives exactly the masks of segment-anything's own generator run patch by patch."""
    from segment_anything import SamAutomaticMaskGenerator

    rgb, _ = zurich_patch
    second = np.ascontiguousarray(rgb[:, ::-1])  # the same real pixels, mirrored: another patch
    settings = {**FAST_AMG, "crop_n_layers": 1}
    generator = sam.MaskGenerator(mobile_sam, **settings)
    library = SamAutomaticMaskGenerator(mobile_sam, **generator.settings)
    batched = generator.many([rgb, second])
    for patch, masks in zip((rgb, second), batched):
        alone = generator._filter(library.generate(patch))
        assert len(masks) == len(alone) > 3
        assert np.array_equal(masks.masks, alone.masks) and np.array_equal(masks.bbox, alone.bbox)


def test_fast_sam_runs_in_bfloat16_and_leaves_the_model_exact(mobile_sam, zurich_patch):
    rgb, _ = zurich_patch
    exact = sam.MaskGenerator(mobile_sam, **FAST_AMG)(rgb)
    fast = sam.MaskGenerator(mobile_sam, fast=True, **FAST_AMG)(rgb)
    assert len(fast) > 0 and fast.masks.dtype == bool
    assert np.array_equal(sam.MaskGenerator(mobile_sam, **FAST_AMG)(rgb).masks, exact.masks)  # model untouched


def test_zero_masks_is_legal(mobile_sam, zurich_patch):
    # A predicted-IoU threshold no mask reaches: SAM keeps nothing, and the patch has an empty graph.
    rgb, _ = zurich_patch
    masks = sam.MaskGenerator(mobile_sam, **{**FAST_AMG, "pred_iou_thresh": 1.01})(rgb)
    assert len(masks) == 0 and masks.masks.shape == (0, 320, 320)
    g = graph.build_graph(rgb, masks)
    assert g.num_nodes == 0 and g.edge_index.shape == (2, 0)


def test_checkpoint_errors(tmp_path):
    real = assets.fetch_member(assets.MOBILE_SAM)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(real.read_bytes()[: 1_000_000])
    with pytest.raises(sam.SAMError, match="corrupt or truncated"):
        sam.load_sam(truncated)
    with pytest.raises(sam.SAMError, match="is a vit_t model, not the requested vit_b"):
        sam.load_sam(real, architecture="vit_b")
    foreign = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(sam.SAMError, match="not a Segment Anything model"):
        sam.load_sam(foreign)


def test_fusion_weights():
    p_s2, p_vhr = np.eye(17)[0], np.eye(17)[16]
    fused = fusion.fuse(p_s2, p_vhr, 0.6)
    assert fused[0] == pytest.approx(0.6) and fused[16] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="outside"):
        fusion.fuse(p_s2, p_vhr, 1.5)
