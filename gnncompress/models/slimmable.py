"""A slimmable multi-task student: one set of weights, several input widths,
output heads and hidden-width multipliers."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

from gnncompress.core.catalogue import SLIMMABLE_ARCHS
from gnncompress.core.defaults import DEFAULT_WIDTHS
from gnncompress.core.errors import ArchitectureError
from gnncompress.models.build import build_model, run_model
from gnncompress.models.output import ModelOutput
from gnncompress.models.propagation import EdgeProbe
from gnncompress.models.spec import ArchSpec

SLIMMABLE_KEY = 'gnncompress.slimmable-spec'


@dataclass
class SlimmableSpec:
    """Everything needed to rebuild a :class:`SlimmableGNN`.

    Args:
        arch (str): Message-passing layer: gcn, gat, gatv2, sage or gin.
        in_channels (list[int]): Feature width of each input graph; the
            first layer is sized for the widest.
        hidden_channels (int): Hidden width at multiplier 1 (GAT: all heads
            together).
        num_layers (int): Message-passing layers.
        out_channels (list[int]): Classes of each output head.
        widths (list[float]): Hidden-width multipliers trained jointly.
        heads (int): Attention heads (GAT, GATv2). (default: :obj:`1`)
        dropout (float): Dropout in training. (default: :obj:`0.5`)
    """
    arch: str
    in_channels: list[int]
    hidden_channels: int
    num_layers: int
    out_channels: list[int]
    widths: list[float] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    heads: int = 1
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.arch not in SLIMMABLE_ARCHS:
            raise ArchitectureError(
                f"A slimmable student cannot be '{self.arch}' (choose from "
                f"{', '.join(SLIMMABLE_ARCHS)})")
        if self.arch not in ('gat', 'gatv2'):
            self.heads = 1
        if self.hidden_channels % self.heads:
            raise ArchitectureError(
                f'Hidden width {self.hidden_channels} is not divisible by '
                f'{self.heads} heads: pick --hidden as a multiple of --heads')
        if not self.widths or any(not 0 < w <= 1 for w in self.widths):
            raise ArchitectureError(
                f'Width multipliers must lie in (0, 1] (got {self.widths})')
        if self.num_layers < 2:
            raise ArchitectureError(
                f'A slimmable student needs at least 2 layers (got '
                f'{self.num_layers}): only hidden layers can be slimmed')
        self.widths = sorted({float(w) for w in self.widths})

    def hidden_at(self, width: float) -> int:
        """The hidden width at multiplier ``width``: a multiple of the heads,
        at least one channel per head."""
        per_head = self.hidden_channels // self.heads
        return self.heads * max(1, round(width * per_head))

    def arch_spec(self, in_channels: int, head: int,
                  width: float) -> ArchSpec:
        """The plain model one (input width, head, multiplier) runs as."""
        return ArchSpec(arch=self.arch, in_channels=in_channels,
                        hidden_channels=self.hidden_at(width),
                        num_layers=self.num_layers,
                        out_channels=self.out_channels[head],
                        heads=self.heads, dropout=self.dropout)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SlimmableSpec:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as e:
            raise ArchitectureError(f'Bad slimmable spec ({e})') from None


class _Store(nn.Module):
    """Tensors of a template model under names without dots."""

    def __init__(self, model: nn.Module, keep: Sequence[str]) -> None:
        super().__init__()
        for name, p in model.named_parameters():
            if name in keep:
                self.register_parameter(_escape(name),
                                        nn.Parameter(p.detach().clone()))
        for name, b in model.named_buffers():
            if name in keep:
                self.register_buffer(_escape(name), b.detach().clone())

    def tensors(self) -> dict[str, Tensor]:
        found = dict(self.named_parameters(recurse=False))
        found.update(self.named_buffers(recurse=False))
        return {_unescape(k): v for k, v in found.items()}


def _escape(name: str) -> str:
    return name.replace('.', '__')


def _unescape(name: str) -> str:
    return name.replace('__', '.')


class _Output(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, edge_index: Tensor) -> ModelOutput:
        return run_model(self.model, x, edge_index)


class TaskSlice(nn.Module):
    """A plain model whose logits are cut to the columns ``[start, stop)``
    of one task (a label subset in a union head): what is exported."""

    def __init__(self, model: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.model, self.start, self.stop = model, start, stop

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.model(x, edge_index)[:, self.start:self.stop]


class SlimmableGNN(nn.Module):
    r"""A slimmable multi-task GNN student for knowledge amalgamation, after
    the `"Amalgamating Knowledge from Heterogeneous Graph Neural Networks"
    <https://openaccess.thecvf.com/content/CVPR2021/html/Jing_Amalgamating_Knowledge_From_Heterogeneous_Graph_Neural_Networks_CVPR_2021_paper.html>`_
    paper (Jing et al., CVPR 2021) and slimmable networks (Yu et al., ICLR
    2019).

    One set of weights, stored at full size: the first layer for the widest
    input :math:`C_{max}`, the hidden layers at ``hidden_channels``, one
    output layer per head. Running with input width :math:`C_i`, head
    :math:`h` and multiplier :math:`m` uses the leading slice of every
    weight:

    .. math::
        W^{(1)}_{[:mH,\,:C_i]},\quad W^{(l)}_{[:mH,\,:mH]},\quad
        W^{(L),h}_{[:,\,:mH]}

    (GAT: the leading channels of every head). Each (input, head, width)
    runs as an ordinary PyG model of the architecture given, built once on
    the meta device, with the sliced tensors passed in, so gradients reach
    the shared weights and every combination exports as a plain model
    (:meth:`submodel`). The slimmable convolution is absent from the
    authors' public code; this slicing is our construction.

    Args:
        spec (SlimmableSpec): The architecture.
    """

    def __init__(self, spec: SlimmableSpec) -> None:
        super().__init__()
        self.spec = spec
        last = f'convs.{spec.num_layers - 1}.'
        self.body: _Store | None = None
        stores = []
        for head in range(len(spec.out_channels)):
            template = build_model(spec.arch_spec(max(spec.in_channels),
                                                  head, 1.0))
            names = [k for k in template.state_dict()]
            if self.body is None:
                self.body = _Store(template, [k for k in names
                                              if not k.startswith(last)])
            stores.append(_Store(template, [k for k in names
                                            if k.startswith(last)]))
        self.heads = nn.ModuleList(stores)
        self._templates: dict[tuple[int, int, float], nn.Module] = {}

    def _template(self, in_channels: int, head: int,
                  width: float) -> nn.Module:
        key = (in_channels, head, width)
        if key not in self._templates:
            with torch.device('meta'):
                self._templates[key] = _Output(build_model(
                    self.spec.arch_spec(in_channels, head, width)))
        return self._templates[key]

    def sliced(self, in_channels: int, head: int,
               width: float) -> dict[str, Tensor]:
        """The tensors of the plain model for (input, head, width), as
        slices of the shared ones (gradients flow back)."""
        self._check(in_channels, head, width)
        template = self._template(in_channels, head, width).model
        wide = self.spec.hidden_channels
        narrow = self.spec.hidden_at(width)
        full = {**self.body.tensors(), **self.heads[head].tensors()}
        return {name: _slice(full[name], tuple(t.shape), wide, narrow,
                             self.spec.heads)
                for name, t in template.state_dict().items()}

    def unit_edge_weights(self, x: Tensor, edge_index: Tensor,
                          head: int = 0,
                          width: float = 1.0) -> Tensor | EdgeProbe:
        """A weight of 1 per edge with gradient, for :meth:`forward_output`
        (``edge_mask``) and TAM's attribution map: an :class:`EdgeProbe`
        when every layer runs as a sparse product, else a tensor (PyG's
        explain masks, per-edge messages)."""
        model = self._template(x.size(1), head, width).model
        if EdgeProbe.supports(model, x, edge_index):
            return EdgeProbe(edge_index, x.size(0))
        return torch.ones(edge_index.size(1), device=x.device,
                          requires_grad=True)

    def forward_output(self, x: Tensor, edge_index: Tensor, head: int = 0,
                       width: float = 1.0,
                       edge_mask: Tensor | EdgeProbe | None = None,
                       ) -> ModelOutput:
        """Run with the input width of ``x``, output ``head`` and width
        multiplier ``width``. ``edge_mask`` (one value per edge, or a
        probe from :meth:`unit_edge_weights`) is multiplied into every
        message of every layer."""
        wrapper = self._template(x.size(1), head, width)
        wrapper.train(self.training)
        tensors = {f'model.{k}': v
                   for k, v in self.sliced(x.size(1), head, width).items()}
        if edge_mask is None:
            return functional_call(wrapper, tensors, (x, edge_index))
        if isinstance(edge_mask, EdgeProbe):
            with edge_mask.running():
                return functional_call(wrapper, tensors, (x, edge_index))
        set_masks(wrapper, edge_mask, edge_index, apply_sigmoid=False)
        try:
            return functional_call(wrapper, tensors, (x, edge_index))
        finally:
            clear_masks(wrapper)

    def forward(self, x: Tensor, edge_index: Tensor, head: int = 0,
                width: float = 1.0) -> Tensor:
        return self.forward_output(x, edge_index, head, width).logits

    def submodel(self, in_channels: int, head: int,
                 width: float) -> nn.Module:
        """A plain PyG model (in eval mode, on the CPU) holding a copy of the
        weights for (input width, head, width multiplier)."""
        model = build_model(self.spec.arch_spec(in_channels, head, width))
        with torch.no_grad():
            model.load_state_dict({k: v.detach().cpu().contiguous()
                                   for k, v in self.sliced(
                                       in_channels, head, width).items()})
        return model.eval()

    def _check(self, in_channels: int, head: int, width: float) -> None:
        if in_channels > max(self.spec.in_channels):
            raise ArchitectureError(
                f'Input has {in_channels} features; the student takes at '
                f'most {max(self.spec.in_channels)}')
        if not 0 <= head < len(self.spec.out_channels):
            raise ArchitectureError(
                f'Head {head} does not exist (the student has '
                f'{len(self.spec.out_channels)})')
        if not 0 < width <= 1:
            raise ArchitectureError(f'Width multiplier {width} is not in '
                                    f'(0, 1]')


def _slice(full: Tensor, shape: tuple[int, ...], wide: int, narrow: int,
           heads: int) -> Tensor:
    """The leading ``shape`` part of ``full``; a dimension of the hidden
    width of a multi-head model keeps the leading channels of each head."""
    out = full
    for dim, size in enumerate(shape):
        if out.size(dim) == size:
            continue
        if heads > 1 and out.size(dim) == wide and size == narrow:
            index = (torch.arange(heads, device=full.device)[:, None]
                     * (wide // heads)
                     + torch.arange(narrow // heads, device=full.device))
            out = out.index_select(dim, index.reshape(-1))
        else:
            out = out.narrow(dim, 0, size)
    return out
