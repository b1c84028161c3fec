"""Object graphs of the DF4LCZ high-resolution stream: one node per kept SAM mask (``shared/design/df4lcz_method.md`` §3).

Node features (5, each in [0, 1]): mean R, G, B over the mask (/255) and the bbox centre (cx, cy) / 320.
Adjacency: the paper leaves the rule open, so it is explicit here and recorded in the model card:
``{"rule": "radius", "radius": r}`` joins two nodes when their centres are at most ``r`` apart (r in the same
[0, 1] units as cx, cy; default 0.25 = 80 m on a 320 m patch), and ``"segmentation"`` says how the masks were
made (``segmentation_of``). These graphs' A is binary and symmetric, without
self-loops. ``normalised_edges`` takes any A (the LCZC-GES2 graphs read by ``train`` may be asymmetric and keep
self-loops, as the authors' loader does) and normalises it as Spektral's ``NormalizeAdj``: Â = D^-1/2 A D^-1/2
with D = diag(row sums of A), no identity added, and 0 where a degree is 0.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..models.registry import SEGMENTATIONS
from .sam import PATCH_SIZE_PX, PatchMasks

DEFAULT_GRAPH_RULE: dict[str, Any] = {"rule": "radius", "radius": 0.25}


@dataclass
class ObjectGraph:
    """x: float32 (N, 5); edge_index: int64 (2, E), one column (source j, target i) per nonzero Â[i, j];
    edge_weight: float32 (E,) = Â[i, j]. torch-geometric sums at the target, so a layer computes Â·X."""

    x: npt.NDArray[np.float32]
    edge_index: npt.NDArray[np.int64]
    edge_weight: npt.NDArray[np.float32]

    @property
    def num_nodes(self) -> int:
        return len(self.x)


def node_features(rgb: npt.NDArray[np.uint8], patch_masks: PatchMasks) -> npt.NDArray[np.float32]:
    """(N, 5) float32 features of the masks of a (320, 320, 3) uint8 patch."""
    if len(patch_masks) == 0:
        return np.zeros((0, 5), np.float32)
    masks = patch_masks.masks.reshape(len(patch_masks), -1).astype(np.float32)
    colours = masks @ rgb.reshape(-1, 3).astype(np.float32) / masks.sum(1, keepdims=True) / 255.0
    x, y, w, h = patch_masks.bbox.T
    centres = np.stack([(x + w / 2) / PATCH_SIZE_PX, (y + h / 2) / PATCH_SIZE_PX], axis=1)
    return np.concatenate([colours, centres], axis=1).astype(np.float32)


def adjacency(centres: npt.NDArray[np.floating], rule: dict[str, Any] | None = None) -> npt.NDArray[np.bool_]:
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


def segmentation_of(rule: dict[str, Any] | None) -> str:
    """``tiles`` or ``footprint`` from a graph rule's ``segmentation`` (none: ``footprint``, the paper's and older
    models'). Raises ValueError for another value."""
    mode = (rule or {}).get("segmentation", "footprint")
    if mode not in SEGMENTATIONS:
        raise ValueError(f"unknown segmentation {mode!r} in the graph rule; supported: {', '.join(SEGMENTATIONS)}")
    return mode


def normalised_edges(a: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(edge_index int64 (2, E), edge_weight float32 (E,)) of Â = D^-1/2 A D^-1/2 for an (N, N) adjacency ``a``.

    D holds the row sums of ``a``; a node with degree 0 gets D^-1/2 = 0 (Spektral: inf → 0). Entry Â[i, j]
    becomes the edge j → i (source row 0, target row 1), so torch-geometric's sum at the target gives Â·X,
    as Spektral's sparse product does, not Âᵀ·X.
    """
    a = np.asarray(a, np.float64)
    degree = a.sum(1)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(degree), 0.0)
    a_hat = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    rows, cols = np.nonzero(a_hat)
    return np.stack([cols, rows]).astype(np.int64), a_hat[rows, cols].astype(np.float32)


def build_graph(rgb: npt.NDArray[np.uint8], patch_masks: PatchMasks, rule: dict[str, Any] | None = None) -> ObjectGraph:
    """The ObjectGraph of one patch; with zero masks, a graph with zero nodes (the patch has no VHR vote)."""
    x = node_features(rgb, patch_masks)
    edge_index, edge_weight = normalised_edges(adjacency(x[:, 3:5], rule))
    return ObjectGraph(x, edge_index, edge_weight)
