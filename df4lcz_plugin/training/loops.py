"""Training loops of the two DF4LCZ streams and the choice of the fusion weight α.

Recipes (``shared/design/df4lcz_method.md`` §4–6; ctrlovefly/DF4LCZ):
- Sentinel-2 stream: NAdam (β 0.9/0.999, ε 1e-7), batch 64, cross-entropy averaged over the batch, early
  stopping on validation loss (patience 40), the best-validation-OA weights kept. From scratch (3D ResNet11):
  lr 0.002 × 0.4^floor(epoch / 5) — the authors' training script's argparse default ``step_size=5``, which
  their README command does not override. Fine-tuning the pretrained Sen2LCZ-Net (our addition, not in the
  paper): lr 2e-4 × 0.4^floor(epoch / 50), so as not to destroy the pretrained features. On users' training
  areas the loss is weighted by inverse class frequency (``samples.class_weights``; not on LCZC-GES2, as in
  the authors' code).
- Augmentation (``_augment``, training batches only): each sample draws its own horizontal flip (p 0.5),
  rotation and vertical flip (p 0.5), in the authors' order (``A.Compose([HorizontalFlip(p=0.5),
  Rotate(limit=(-90, 90)), VerticalFlip(p=0.5)])`` per sample). Deviation: the rotation is a multiple of 90°
  (0/90/180/270° equally likely), exact on 32 × 32 patches, where albumentations' Rotate (p 0.5) turns by
  any angle in [−90°, 90°] with bilinear interpolation and a reflected border.
- GCN stream: NAdam lr 0.01 constant, batch 32 graphs, cross-entropy summed over the batch, early stopping on
  validation loss (patience 20), the best-validation-OA weights kept.
- α: the paper fixes α = 0.6 (``PAPER_ALPHA``); ``choose_alpha`` is our addition: on the validation samples
  that have both streams, the α in {0, 0.05, …, 1} with the highest OA (ties go to the value closest to 0.6).
Cancelling keeps the best weights so far (``TrainingResult.canceled``); before the first epoch ends it raises.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..runtime.feedback import Canceled, Feedback
from ..runtime.kill_points import kill_point

if TYPE_CHECKING:
    import torch

    from ..models.gcn import ObjectGCN
    from ..vhr.graph import ObjectGraph

PAPER_ALPHA = 0.6


@dataclass
class TrainingResult:
    """The best weights (in the module), per-epoch history, and whether training was cut short."""

    module: torch.nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    canceled: bool = False


def log_probabilities(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Log class probabilities (B, 17) of a Sentinel-2 stream (logits if it has them, else its probabilities)."""
    import torch

    logits = getattr(module, "logits", None)
    if logits is not None:
        return torch.log_softmax(logits(x), dim=1)
    return torch.log(module(x).clamp_min(1e-7))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A per-sample random flip/rotation of each of the (B, C, H, H) patches ``x`` (module docstring)."""
    import torch

    def per_sample(flag: torch.Tensor) -> torch.Tensor:
        return flag.view(-1, *([1] * (x.dim() - 1)))

    x = torch.where(per_sample(torch.rand(len(x), generator=generator) < 0.5), x.flip(-1), x)
    turns = torch.randint(0, 4, (len(x),), generator=generator)
    x = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])[turns, torch.arange(len(x))]
    return torch.where(per_sample(torch.rand(len(x), generator=generator) < 0.5), x.flip(-2), x)


def train_sentinel2(module: torch.nn.Module, x_train: npt.NDArray[np.float32] | torch.Tensor,
                    y_train: npt.NDArray[np.int64] | torch.Tensor, x_val: npt.NDArray[np.float32] | torch.Tensor,
                    y_val: npt.NDArray[np.int64] | torch.Tensor, epochs: int = 100,
                    batch_size: int = 64, lr: float = 0.002, weights: npt.NDArray[np.float32] | None = None,
                    device: torch.device | str = "cpu", seed: int = 0, feedback: Feedback | None = None,
                    patience: int = 40, step_size: int = 5, decay: float = 0.4) -> TrainingResult:
    """Train a Sentinel-2 stream on patches (float32 (N, 10, 32, 32)) and 0-based labels (int64 (N,)).

    lr is multiplied by ``decay`` every ``step_size`` epochs. Reports lr, loss and validation OA per epoch (also
    in ``history``); returns a TrainingResult holding the best-validation-OA weights.
    Raises Canceled if stopped before the first epoch ends.
    """
    import torch

    feedback = feedback or Feedback()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    module = module.to(device)
    optimiser = torch.optim.NAdam(module.parameters(), lr=lr, eps=1e-7)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=step_size, gamma=decay)
    weight = torch.as_tensor(weights, device=device) if weights is not None else None
    x_train, y_train = torch.as_tensor(x_train), torch.as_tensor(y_train)
    x_val, y_val = torch.as_tensor(x_val).to(device), torch.as_tensor(y_val).to(device)
    result = TrainingResult(module)
    best_oa, best_state, best_loss, waited = -1.0, None, float("inf"), 0
    for epoch in range(epochs):
        module.train()
        order = torch.randperm(len(y_train), generator=generator)
        losses = []
        epoch_lr = optimiser.param_groups[0]["lr"]
        for start in range(0, len(order), batch_size):
            if feedback.canceled():
                return _stop(result, best_state, epoch, feedback)
            index = order[start:start + batch_size]
            x = _augment(x_train[index], generator).to(device)
            loss = torch.nn.functional.nll_loss(log_probabilities(module, x), y_train[index].to(device), weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        scheduler.step()
        module.eval()
        with torch.no_grad():
            log_p = torch.cat([log_probabilities(module, x_val[i:i + 256]) for i in range(0, len(y_val), 256)])
            val_loss = float(torch.nn.functional.nll_loss(log_p, y_val, weight=weight))
            val_oa = float((log_p.argmax(1) == y_val).float().mean())
        result.history.append({"epoch": epoch + 1, "lr": epoch_lr, "loss": float(np.mean(losses)),
                               "val_loss": val_loss, "val_OA": val_oa})
        feedback.info(f"Sentinel-2 stream, epoch {epoch + 1}/{epochs} (lr {epoch_lr:.6g}): "
                      f"loss {np.mean(losses):.4f}, validation loss {val_loss:.4f}, validation OA {val_oa:.3f}")
        feedback.progress((epoch + 1) / epochs)
        kill_point("epoch")
        if val_oa > best_oa:
            best_oa, best_state, result.best_epoch = val_oa, copy.deepcopy(module.state_dict()), epoch + 1
        waited = 0 if val_loss < best_loss else waited + 1
        best_loss = min(best_loss, val_loss)
        if waited >= patience:
            feedback.info(f"Early stop: validation loss has not improved for {patience} epochs.")
            break
    module.load_state_dict(_best(best_state))
    return result


def _best(best_state: dict[str, Any] | None) -> dict[str, Any]:
    """The best epoch's weights; ValueError when no epoch gave a validation OA (no epoch, or no validation sample)."""
    if best_state is None:
        raise ValueError("Training ended without a validation accuracy (no epoch ran, or the validation set is "
                         "empty); no model was written.")
    return best_state


def _stop(result: TrainingResult, best_state: dict[str, Any] | None, epoch: int,
          feedback: Feedback) -> TrainingResult:
    if best_state is None:
        raise Canceled("Training was canceled before its first epoch ended; no model was written.")
    result.module.load_state_dict(best_state)
    result.canceled = True
    feedback.warning(f"Training canceled during epoch {epoch + 1}; the best weights so far "
                     f"(epoch {result.best_epoch}) are kept.")
    return result


def graph_batch(graphs: Sequence[ObjectGraph], device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch tensors (x, edge_index, edge_weight, batch) of a list of ObjectGraphs (disjoint union)."""
    import torch

    offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
    x = torch.from_numpy(np.concatenate([g.x for g in graphs]))
    edge_index = torch.from_numpy(np.concatenate([g.edge_index + o for g, o in zip(graphs, offsets)], axis=1))
    edge_weight = torch.from_numpy(np.concatenate([g.edge_weight for g in graphs]))
    batch = torch.from_numpy(np.repeat(np.arange(len(graphs)), [g.num_nodes for g in graphs]))
    return x.to(device), edge_index.to(device), edge_weight.to(device), batch.to(device)


def gcn_probabilities(gcn: torch.nn.Module, graphs: Sequence[ObjectGraph],
                      device: torch.device | str = "cpu") -> npt.NDArray[np.float32]:
    """float32 (len(graphs), 17) class probabilities of non-empty ObjectGraphs."""
    import torch

    with torch.no_grad():
        return gcn(*graph_batch(graphs, device)).cpu().numpy()


def train_gcn(gcn: ObjectGCN, train_graphs: Sequence[ObjectGraph], y_train: npt.ArrayLike,
              val_graphs: Sequence[ObjectGraph], y_val: npt.ArrayLike, epochs: int = 100, batch_size: int = 32,
              lr: float = 0.01, device: torch.device | str = "cpu", seed: int = 0, feedback: Feedback | None = None,
              patience: int = 20) -> TrainingResult:
    """Train the GCN on non-empty ObjectGraphs with 0-based labels; returns a TrainingResult (best val OA)."""
    import torch

    feedback = feedback or Feedback()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gcn = gcn.to(device)
    optimiser = torch.optim.NAdam(gcn.parameters(), lr=lr, eps=1e-7)
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    result = TrainingResult(gcn)
    best_oa, best_state, best_loss, waited = -1.0, None, float("inf"), 0
    for epoch in range(epochs):
        gcn.train()
        order = rng.permutation(len(train_graphs))
        losses = []
        for start in range(0, len(order), batch_size):
            if feedback.canceled():
                return _stop(result, best_state, epoch, feedback)
            index = order[start:start + batch_size]
            logits = gcn.logits(*graph_batch([train_graphs[i] for i in index], device))
            loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y_train[index], device=device),
                                                     reduction="sum")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item() / len(index))
        gcn.eval()
        with torch.no_grad():
            logits = gcn.logits(*graph_batch(val_graphs, device))
            val_loss = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y_val, device=device)))
            val_oa = float((logits.argmax(1).cpu().numpy() == y_val).mean())
        result.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_loss": val_loss,
                               "val_OA": val_oa})
        feedback.info(f"GCN stream, epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, "
                      f"validation OA {val_oa:.3f}")
        if val_oa > best_oa:
            best_oa, best_state, result.best_epoch = val_oa, copy.deepcopy(gcn.state_dict()), epoch + 1
        waited = 0 if val_loss < best_loss else waited + 1
        best_loss = min(best_loss, val_loss)
        if waited >= patience:
            break
    gcn.load_state_dict(_best(best_state))
    return result


def choose_alpha(p_s2: npt.NDArray[np.floating], p_vhr: npt.NDArray[np.floating], y: npt.ArrayLike) -> float:
    """The fusion weight α maximising OA of α·p_s2 + (1−α)·p_vhr on validation samples (arrays (N, 17), (N,))."""
    candidates = np.round(np.arange(0, 1.0001, 0.05), 2)
    scores = [((a * p_s2 + (1 - a) * p_vhr).argmax(1) == y).mean() for a in candidates]
    best = max(scores)
    return float(min((a for a, s in zip(candidates, scores) if s == best), key=lambda a: abs(a - PAPER_ALPHA)))
