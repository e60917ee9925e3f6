"""DGCNN: EdgeConv layers on a kNN graph rebuilt from the features in
every layer, global pooling and an MLP head, for point-cloud
classification."""
from __future__ import annotations

import warnings
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

    # False: train through batch norm on every edge (the plain formula,
    # for reference and benchmarks/kernels.py).
    fast_training = True

    def forward(self, h: Tensor,  # type: ignore[override]
                idx: Tensor) -> Tensor:
        if self.training and self.fast_training and \
                self.norm.momentum is not None and \
                self.norm.track_running_stats and self.norm.affine:
            return self._train_forward(h, idx)
        e = self.edge_features(h, idx)                        # [B, n, k, w]
        shape = e.shape
        e = F.leaky_relu(self.norm(e.reshape(-1, shape[-1])), NEGATIVE_SLOPE)
        return e.view(shape).amax(dim=2)                      # [B, n, w]

    def _train_forward(self, h: Tensor, idx: Tensor) -> Tensor:
        r"""The training forward without per-edge tensors in the autograd
        graph.

        The edge feature is :math:`e_{ij} = c_i + u_j` (centre and
        neighbour parts, :meth:`edge_features`). Batch norm maps it to
        :math:`a e_{ij} + b` per channel and LeakyReLU is increasing, so
        the maximum over :math:`j` is
        :math:`\sigma(a (c_i + \max_j u_j) + b)` where :math:`a \ge 0` and
        :math:`\sigma(a (c_i + \min_j u_j) + b)` where :math:`a < 0`. The
        norm's statistics over all edges come from per-point sums: the mean
        from :math:`c` and each point's neighbour count, the variance from
        centred :math:`c`, :math:`u` and :math:`\sum_{j} u_j` per point (a
        sparse product). The maximising neighbours are found without
        gradient; the gradient flows through one gathered entry per point
        and channel instead of all :math:`k`. Equal to the plain forward
        to float rounding, gradients included (a test); batch norm's
        running statistics are updated as it would update them.
        """
        b, n, k = idx.shape
        d = h.size(-1)
        w_self, w_nbr = self.lin.weight[:, :d], self.lin.weight[:, d:]
        out = w_nbr.size(0)
        centre = (h @ (w_self - w_nbr).t()).reshape(-1, out)  # [P, w]
        nbr = (h @ w_nbr.t()).reshape(-1, out)                 # [P, w]
        flat = flat_neighbours(idx).reshape(-1)                # [P * k]
        points, edges = b * n, b * n * k
        # Batch statistics over the edges, from per-point quantities.
        with torch.no_grad():
            count = torch.bincount(flat, minlength=points).to(nbr.dtype)
        nbr_mean = (count[:, None] * nbr).sum(0) / edges
        centre_mean = centre.mean(0)
        c = centre - centre_mean
        u = nbr - nbr_mean
        with warnings.catch_warnings():  # "CSR support is in beta state"
            warnings.simplefilter('ignore', UserWarning)
            adjacency = torch.sparse_csr_tensor(
                torch.arange(0, edges + 1, k, device=h.device), flat,
                torch.ones(edges, dtype=nbr.dtype, device=h.device),
                (points, points), check_invariants=False)
        u_sum = torch.sparse.mm(adjacency, u)                  # [P, w]
        var = ((c * c).sum(0) * k + 2 * (c * u_sum).sum(0)
               + (count[:, None] * u * u).sum(0)) / edges
        mean = centre_mean + nbr_mean
        norm = self.norm
        with torch.no_grad():
            m = norm.momentum
            norm.running_mean.mul_(1 - m).add_(m * mean.detach())
            norm.running_var.mul_(1 - m).add_(
                m * var.detach() * edges / max(1, edges - 1))
            norm.num_batches_tracked.add_(1)
        scale = norm.weight / torch.sqrt(var + norm.eps)
        shift = norm.bias - scale * mean
        # The neighbour each point keeps per channel: the largest u_j
        # where the scale is positive, the smallest where it is negative.
        with torch.no_grad():
            sign = torch.where(scale >= 0, 1.0, -1.0).to(nbr.dtype)
            signed = (nbr * sign)[flat].view(points, k, out)
            top = signed.amax(dim=1, keepdim=True)
            # Index of the maximum (the last one on ties) without argmax,
            # which is slow along a middle dimension on CPU.
            small = torch.uint8 if k <= 256 else torch.int32
            slot = torch.arange(k, dtype=small, device=h.device)
            slot = ((signed == top).to(small) * slot.view(1, k, 1)).amax(1)
            best_j = flat.view(points, k).gather(1, slot.long())  # [P, w]
            del signed, top
        best = nbr.gather(0, best_j)
        y = F.leaky_relu(scale * (centre + best) + shift, NEGATIVE_SLOPE)
        return y.view(b, n, out)


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


def dense_points(x: Tensor, batch: Tensor | None) -> Tensor:
    """Flattened points ``[N, C]`` of equally sized clouds (``batch`` maps
    each point to its cloud, clouds contiguous) as ``[B, n, C]``."""
    num_clouds = 1 if batch is None or batch.numel() == 0 \
        else int(batch.max()) + 1
    if x.size(0) % num_clouds:
        raise ValueError(f'{x.size(0)} points do not split into '
                         f'{num_clouds} clouds of equal size')
    return x.view(num_clouds, -1, x.size(-1))
