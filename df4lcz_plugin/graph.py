"""Object graphs of the DF4LCZ high-resolution stream: one node per kept SAM mask (``shared/design/df4lcz_method.md`` §3).

Node features (5, each in [0, 1]): mean R, G, B over the mask (/255) and the bbox centre (cx, cy) / 320.
Adjacency: the paper leaves the rule open, so it is explicit here and recorded in the model card:
``{"rule": "radius", "radius": r}`` joins two nodes when their centres are at most ``r`` apart (r in the same
[0, 1] units as cx, cy; default 0.25 = 80 m on a 320 m patch). A is binary and symmetric, without self-loops,
and is normalised as D^-1/2 A D^-1/2 (isolated nodes keep a zero row), as Spektral's GCSConv expects.
"""

from dataclasses import dataclass

import numpy as np

from .sam import PATCH_SIZE_PX

DEFAULT_GRAPH_RULE = {"rule": "radius", "radius": 0.25}


@dataclass
class ObjectGraph:
    """x: float32 (N, 5); edge_index: int64 (2, E), both directions; edge_weight: float32 (E,) = 1/sqrt(d_i d_j)."""

    x: np.ndarray
    edge_index: np.ndarray
    edge_weight: np.ndarray

    @property
    def num_nodes(self):
        return len(self.x)


def node_features(rgb, patch_masks):
    """(N, 5) float32 features of the masks of a (320, 320, 3) uint8 patch."""
    if len(patch_masks) == 0:
        return np.zeros((0, 5), np.float32)
    masks = patch_masks.masks.reshape(len(patch_masks), -1).astype(np.float32)
    colours = masks @ rgb.reshape(-1, 3).astype(np.float32) / masks.sum(1, keepdims=True) / 255.0
    x, y, w, h = patch_masks.bbox.T
    centres = np.stack([(x + w / 2) / PATCH_SIZE_PX, (y + h / 2) / PATCH_SIZE_PX], axis=1)
    return np.concatenate([colours, centres], axis=1).astype(np.float32)


def adjacency(centres, rule=None):
    """Binary symmetric (N, N) adjacency without self-loops from node centres (N, 2), by ``rule``.

    Raises ValueError for an unknown rule.
    """
    rule = rule or DEFAULT_GRAPH_RULE
    if rule.get("rule") != "radius":
        raise ValueError(f"unknown graph rule {rule!r}; supported: {{'rule': 'radius', 'radius': r}}")
    distances = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    a = distances <= float(rule["radius"])
    np.fill_diagonal(a, False)
    return a


def normalised_edges(a):
    """Edges of binary adjacency ``a`` with weights of D^-1/2 A D^-1/2: (edge_index int64 (2, E), weight (E,))."""
    degree = a.sum(1).astype(np.float64)
    rows, cols = np.nonzero(a)
    weight = 1.0 / np.sqrt(degree[rows] * degree[cols])
    return np.stack([rows, cols]).astype(np.int64), weight.astype(np.float32)


def build_graph(rgb, patch_masks, rule=None):
    """The ObjectGraph of one patch; with zero masks, a graph with zero nodes (the patch has no VHR vote)."""
    x = node_features(rgb, patch_masks)
    edge_index, edge_weight = normalised_edges(adjacency(x[:, 3:5], rule))
    return ObjectGraph(x, edge_index, edge_weight)
