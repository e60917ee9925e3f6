"""DGCNN: EdgeConv layers on a kNN graph rebuilt from the features in
every layer, global pooling and an MLP head, for point-cloud
classification."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnncompress.models.output import ModelOutput

NEGATIVE_SLOPE = 0.2   # LeakyReLU slope of the authors' code


def knn(h: Tensor, k: int) -> Tensor:
    """The ``k`` nearest points of every point within its own cloud, itself
    included (distance 0), by squared Euclidean distance of ``h``
    ``[B, n, d]``; returns indices ``[B, n, k]`` into each cloud.

    Written with a batched matrix product and ``topk`` only, so that it
    exports to ONNX with dynamic cloud and point counts (PyG's ``knn``
    needs torch-cluster, which neither installs everywhere nor exports).
    """
    sq = h.pow(2).sum(-1)                                     # [B, n]
    dist = sq.unsqueeze(-1) + sq.unsqueeze(-2) \
        - 2 * h @ h.transpose(1, 2)                           # [B, n, n]
    return dist.topk(k, dim=-1, largest=False).indices       # [B, n, k]


def flat_neighbours(idx: Tensor) -> Tensor:
    """Neighbour indices ``[B, n, k]`` within clouds as indices into the
    flattened ``[B * n]`` points."""
    b, n = idx.size(0), idx.size(1)
    offset = torch.arange(b, device=idx.device).view(b, 1, 1) * n
    return idx + offset


def knn_edge_index(idx: Tensor) -> Tensor:
    """The kNN graph as ``edge_index [2, B * n * k]`` over the flattened
    points: row 0 the neighbour ``j`` (source), row 1 the point ``i``
    (destination), as PyG orders messages."""
    b, n, k = idx.shape
    src = flat_neighbours(idx).reshape(-1)
    dst = torch.arange(b * n, device=idx.device).repeat_interleave(k)
    return torch.stack([src, dst])


class _Block(nn.Module):
    """Linear (no bias: the norm has one), batch norm, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1]
        x = self.norm(self.lin(x).reshape(-1, self.lin.out_features))
        return F.leaky_relu(x, NEGATIVE_SLOPE).reshape(*shape, -1)


class EdgeConvLayer(_Block):
    r"""One EdgeConv layer of DGCNN on the kNN graph of its input:

    .. math::
        h_i' = \max_{j \in \mathrm{kNN}(i)} \sigma\big(\mathrm{BN}(
        \Theta \, [h_i \,\|\, h_j - h_i])\big)

    :math:`\Theta [h_i \| h_j - h_i] = (\Theta_1 - \Theta_2) h_i +
    \Theta_2 h_j`, so the linear map runs once per point and only its
    output is gathered per edge (``[B, n, k, out]``, never the
    ``2 d``-wide edge features); the weights keep the paper's layout
    ``lin.weight [out, 2 d]``.
    """

    def edge_features(self, h: Tensor, idx: Tensor) -> Tensor:
        """Pre-norm edge features ``[B, n, k, out]``."""
        d = h.size(-1)
        w_self, w_nbr = self.lin.weight[:, :d], self.lin.weight[:, d:]
        centre = h @ (w_self - w_nbr).t()                    # [B, n, out]
        nbr = (h @ w_nbr.t()).reshape(-1, w_nbr.size(0))     # [B*n, out]
        gathered = nbr[flat_neighbours(idx).reshape(-1)]
        return centre.unsqueeze(2) + gathered.view(*idx.shape, -1)

    def forward(self, h: Tensor,  # type: ignore[override]
                idx: Tensor) -> Tensor:
        e = self.edge_features(h, idx)                        # [B, n, k, w]
        shape = e.shape
        e = F.leaky_relu(self.norm(e.reshape(-1, shape[-1])), NEGATIVE_SLOPE)
        return e.view(shape).amax(dim=2)                      # [B, n, w]


class DGCNN(nn.Module):
    r"""Dynamic graph CNN from the `"Dynamic Graph CNN for Learning on
    Point Clouds" <https://arxiv.org/abs/1801.07829>`_ paper (Wang et al.,
    TOG 2019).

    Layer :math:`l` rebuilds the kNN graph from its input features
    :math:`h^{(l-1)}` (the coordinates for :math:`l = 1`) and applies an
    EdgeConv (:class:`EdgeConvLayer`). The outputs of all layers are
    concatenated per point and embedded, then pooled over the cloud and
    classified by an MLP:

    .. math::
        z = \mathrm{MLP}\Big(\mathrm{pool}_i\, \sigma\big(\mathrm{BN}(
        W_e [h_i^{(1)} \| \dots \| h_i^{(L)}])\big)\Big)

    Input: ``pos [B, n, C]`` (``B`` clouds of ``n`` points each, at least
    ``k``); output: logits ``[B, classes]``.

    Args:
        in_channels (int): Per-point input width (3 for xyz).
        widths (list[int]): EdgeConv output widths, one per layer (paper:
            64, 64, 128, 256).
        out_channels (int): Number of classes.
        k (int, optional): Neighbours per point, the point itself included
            as in the authors' code. (default: :obj:`20`, the paper's)
        emb_channels (int, optional): Width of the per-point embedding
            before pooling. (default: :obj:`1024`, the paper's)
        head (list[int], optional): Hidden widths of the MLP after pooling.
            (default: :obj:`[512, 256]`, the paper's)
        dropout (float, optional): Dropout in the head. (default:
            :obj:`0.5`, the paper's)
        readout (str, optional): Pooling over points, :obj:`'max'` (the
            paper's), :obj:`'mean'` or :obj:`'sum'`. The authors' code
            concatenates max and mean; one pooling keeps the head's input
            width equal to ``emb_channels``. (default: :obj:`'max'`)
    """

    def __init__(self, in_channels: int, widths: Sequence[int],
                 out_channels: int, k: int = 20, emb_channels: int = 1024,
                 head: Sequence[int] = (512, 256), dropout: float = 0.5,
                 readout: str = 'max') -> None:
        super().__init__()
        self.k, self.dropout, self.readout = k, dropout, readout
        dims = [in_channels, *widths]
        self.convs = nn.ModuleList(EdgeConvLayer(2 * a, b)
                                   for a, b in zip(dims[:-1], dims[1:]))
        self.emb = _Block(sum(widths), emb_channels)
        dims = [emb_channels, *head]
        self.head = nn.ModuleList(_Block(a, b)
                                  for a, b in zip(dims[:-1], dims[1:]))
        self.classifier = nn.Linear(dims[-1], out_channels)

    def forward(self, pos: Tensor) -> Tensor:
        return self.forward_output(pos).logits

    def forward_output(self, pos: Tensor,
                       with_edges: bool = False) -> ModelOutput:
        """Logits, every EdgeConv layer's output per point (flattened,
        ``[B * n, w_l]``) and, with ``with_edges``, the kNN graph each
        layer aggregated over (``edge_index`` over the flattened points)."""
        h, outs, edges = pos, [], []
        for conv in self.convs:
            idx = knn(h, self.k)
            h = conv(h, idx)
            outs.append(h)
            if with_edges:
                edges.append(knn_edge_index(idx))
        e = self.emb(torch.cat(outs, dim=-1))                 # [B, n, emb]
        if self.readout == 'max':
            g = e.amax(dim=1)
        elif self.readout == 'mean':
            g = e.mean(dim=1)
        else:
            g = e.sum(dim=1)
        for block in self.head:
            g = F.dropout(block(g), self.dropout, self.training)
        hiddens = [o.reshape(-1, o.size(-1)) for o in outs]
        return ModelOutput(self.classifier(g), hiddens, edges)


def check_spec(spec) -> None:
    """Validate (and normalise) the DGCNN fields of an ArchSpec."""
    from gnncompress.errors import ArchitectureError
    from gnncompress.models.spec import READOUTS

    if not spec.widths or len(spec.widths) != spec.num_layers:
        raise ArchitectureError(
            f'A DGCNN needs one EdgeConv width per layer: got widths '
            f'{spec.widths} for {spec.num_layers} layers (e.g. --layers 4 '
            f'--hidden 64,64,128,256)')
    spec.widths = [int(w) for w in spec.widths]
    spec.head = [int(w) for w in (spec.head or [])]
    spec.k = 20 if spec.k is None else int(spec.k)
    spec.emb_channels = 1024 if spec.emb_channels is None \
        else int(spec.emb_channels)
    spec.readout = spec.readout or 'max'
    if min(spec.widths + spec.head + [spec.emb_channels]) < 1:
        raise ArchitectureError(f'DGCNN widths must be positive (got '
                                f'{spec.widths}, {spec.emb_channels}, '
                                f'{spec.head})')
    if spec.k < 1:
        raise ArchitectureError(f"'k' must be at least 1 (got {spec.k})")
    if spec.readout not in READOUTS:
        raise ArchitectureError(f"Unknown readout '{spec.readout}' (choose "
                                f"from {', '.join(READOUTS)})")


def dense_points(x: Tensor, batch: Tensor | None) -> Tensor:
    """Flattened points ``[N, C]`` of equally sized clouds (``batch`` maps
    each point to its cloud, clouds contiguous) as ``[B, n, C]``."""
    num_clouds = 1 if batch is None or batch.numel() == 0 \
        else int(batch.max()) + 1
    if x.size(0) % num_clouds:
        raise ValueError(f'{x.size(0)} points do not split into '
                         f'{num_clouds} clouds of equal size')
    return x.view(num_clouds, -1, x.size(-1))
