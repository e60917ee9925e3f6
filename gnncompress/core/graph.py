"""The graph every part of gnncompress passes around: features, edges,
labels and the split, in one dataclass."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Graph:
    """One node-classification graph with its split; or, when ``batch`` is
    set, a graph-classification dataset as one disjoint union of graphs
    whose ``y`` and masks are per graph (gnncompress.tasks.graph_level)."""
    name: str
    x: Tensor                 # [N, F] float32
    edge_index: Tensor        # [2, E] int64
    y: Tensor                 # [N] int64
    train_mask: Tensor        # [N] bool
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int
    split: dict[str, Any] = field(default_factory=dict)
    batch: Tensor | None = None   # [N] graph of each node (graph-level)
    # Node-level datasets of several graphs (gnncompress.tasks.inductive): the
    # graph of each node; masks then select whole graphs.
    node_graph: Tensor | None = None
    # Preprocessing applied to x: None (as stored) or 'row' (each node's
    # features divided by their sum, see
    # gnncompress.tasks.datasets.normalize_features).
    feature_norm: str | None = None

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)

    @property
    def num_features(self) -> int:
        return self.x.size(1)

    def to(self, device: torch.device | str) -> Graph:
        moved = {k: getattr(self, k).to(device) for k in
                 ('x', 'edge_index', 'y', 'train_mask', 'val_mask',
                  'test_mask')}
        batch = self.batch.to(device) if self.batch is not None else None
        node_graph = self.node_graph.to(device) \
            if self.node_graph is not None else None
        return Graph(self.name, num_classes=self.num_classes,
                     split=self.split, batch=batch, node_graph=node_graph,
                     feature_norm=self.feature_norm, **moved)

    @property
    def multilabel(self) -> bool:
        """Whether ``y`` is a 0/1 matrix ``[N, labels]`` (BCE, micro-F1)."""
        return self.y.dim() == 2

    def describe(self) -> str:
        if self.batch is not None:
            return (f'{self.name}: {self.y.numel():,} graphs, '
                    f'{self.num_nodes:,} nodes, {self.edge_index.size(1):,} '
                    f'edges, {self.num_features:,} features, '
                    f'{self.num_classes} classes')
        return (f'{self.name}: {self.num_nodes:,} nodes, '
                f'{self.edge_index.size(1):,} edges, {self.num_features:,} '
                f'features, {self.num_classes} classes')
