"""The DF4LCZ graph stream: three GCSConv layers (32, ReLU), global mean pooling and a 17-way linear layer.

Spektral's ``GCSConv`` (used by ctrlovefly/DF4LCZ ``gnn_Net``) computes Z' = Â·X·W1 + X·W2 + b with
Â = D^-1/2 A D^-1/2 (no identity added). torch-geometric's ``GraphConv(aggr="add")`` called with the edge weights
of Â computes lin_rel(Σ_j â_ij x_j) + lin_root(x_i), where lin_rel carries the bias: the same operator.
5,073 parameters (``shared/design/df4lcz_method.md`` §4). A new module starts from Keras's default initial
weights (``keras_default_init``: Glorot-uniform lin_rel, lin_root and head, zero biases), as the authors' model does.
Edge direction: see ``graph.normalised_edges`` (entry Â[i, j] is the edge j → i).
"""

import torch
from torch import nn

from ..lcz.legend import CODES
from . import keras_default_init


class ObjectGCN(nn.Module):
    """GCSConv(5→32)–ReLU ×3 → mean pool per graph → Linear(32→17).

    forward(x float32 (N, 5), edge_index int64 (2, E), edge_weight float32 (E,), batch int64 (N,)) →
    probabilities float32 (G, 17) for the G graphs of the batch; ``logits`` gives the scores before softmax.
    """

    def __init__(self, in_features: int = 5, hidden: int = 32, num_classes: int = len(CODES)) -> None:
        super().__init__()
        from torch_geometric.nn import GraphConv

        # GraphConv with Â's entries as edge weights is GCSConv (module docstring).
        self.convs = nn.ModuleList([GraphConv(n_in, hidden, aggr="add") for n_in in (in_features, hidden, hidden)])
        self.head = nn.Linear(hidden, num_classes)
        keras_default_init(self)

    def logits(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor,
               batch: torch.Tensor) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        for conv in self.convs:
            x = torch.relu(conv(x, edge_index, edge_weight))
        return self.head(global_mean_pool(x, batch))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor,
                batch: torch.Tensor) -> torch.Tensor:
        return self.logits(x, edge_index, edge_weight, batch).softmax(dim=1)
