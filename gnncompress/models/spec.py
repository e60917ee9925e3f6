"""ArchSpec: everything needed to rebuild a model, as JSON-friendly data."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from gnncompress.core.catalogue import ARCHS, BASIC_GNN_ARCHS, POINT_ARCHS
from gnncompress.core.errors import ArchitectureError

# Architectures that use no graph at inference.
GRAPHLESS = ('mlp',)
# Global pooling readouts of graph-classification models.
READOUTS = ('mean', 'sum', 'max')


def check_readout(readout: str, flag: str = 'readout') -> None:
    """A readout name the graph-level models know."""
    if readout not in READOUTS:
        raise ArchitectureError(f"Unknown {flag} '{readout}' (choose from "
                                f"{', '.join(READOUTS)})")
# Norms a checkpoint's weights reveal (checkpoints/inference.py) and
# run_model runs as PyG does.
NORMS = ('batch_norm', 'layer_norm')
# Jumping-knowledge modes of PyG's BasicGNN.
JK_MODES = ('last', 'cat', 'max', 'lstm')
# A teacher rebuilt layer by layer from its checkpoint's weights
# (models/recognise.py): never a student.
SEQUENCE = 'sequence'
ALL_ARCHS = (*ARCHS, *POINT_ARCHS, SEQUENCE)
# SAGE aggregations: PyG's (over the neighbours, plus a root weight on the
# node) and 'gcn' (one weight on the mean over the node and its
# neighbours, models/sage_gcn.py).
SAGE_AGGRS = ('mean', 'sum', 'add', 'max', 'min', 'mul', 'std', 'var',
              'gcn')


@dataclass
class ArchSpec:
    r"""The architecture of a node-classification GNN.

    The layout follows :class:`torch_geometric.nn.models.BasicGNN`:
    ``num_layers`` message-passing layers, the last one mapping to
    ``out_channels`` unless ``jk`` is set, in which case a final linear layer
    does.

    Args:
        arch (str): One of :obj:`gcn`, :obj:`gat`, :obj:`gatv2`, :obj:`sage`,
            :obj:`gin`, :obj:`gcnii` (deep, with initial residual) or
            :obj:`mlp` (no graph at inference).
        in_channels (int): Node feature width.
        hidden_channels (int): Width of every hidden layer (for GAT, all heads
            together).
        num_layers (int): Number of message-passing layers.
        out_channels (int): Number of classes.
        heads (int): Attention heads (GAT, GATv2). (default: :obj:`1`)
        dropout (float): Dropout used in training. (default: :obj:`0.0`)
        norm (str, optional): PyG normalisation name. (default: :obj:`None`)
        jk (str, optional): Jumping-knowledge mode. (default: :obj:`None`)
        act (str): Activation. (default: :obj:`'relu'`)
        aggr (str): SAGE aggregation, one of :data:`SAGE_AGGRS`:
            :obj:`'mean'` is PyG's (the mean of the neighbours, plus a
            separate weight on the node), :obj:`'gcn'` one weight on the
            mean over the node and its neighbours (GLNN's SAGE teacher,
            :mod:`gnncompress.models.sage_gcn`). (default: :obj:`'mean'`)
        train_eps (bool): GIN's trainable epsilon. (default: :obj:`False`)
        alpha (float): GCNII's initial-residual strength.
            (default: :obj:`0.1`)
        theta (float): GCNII's identity-mapping strength.
            (default: :obj:`0.5`)
        shared_weights (bool): GCNII's single weight per layer.
            (default: :obj:`True`)
        readout (str, optional): Global pooling (:obj:`mean`, :obj:`sum`
            or :obj:`max`) for graph classification: all ``num_layers``
            layers are hidden, then the pooled graph embedding goes through
            a linear classifier. :obj:`None` is node classification.
            (default: :obj:`None`)
        widths (list[int], optional): DGCNN's EdgeConv widths, one per
            layer. (default: :obj:`None`)
        k (int, optional): DGCNN's neighbours per point. (default:
            :obj:`None`)
        emb_channels (int, optional): DGCNN's per-point embedding width
            before pooling. (default: :obj:`None`)
        head (list[int], optional): DGCNN's MLP widths after pooling.
            (default: :obj:`None`)
        layers (list[dict], optional): The layers of a :obj:`sequence`
            teacher in execution order, as
            :mod:`gnncompress.models.recognise` reads them from its
            weights. (default: :obj:`None`)
    """
    arch: str
    in_channels: int
    hidden_channels: int
    num_layers: int
    out_channels: int
    heads: int = 1
    dropout: float = 0.0
    norm: str | None = None
    jk: str | None = None
    act: str = 'relu'
    aggr: str = 'mean'
    train_eps: bool = False
    alpha: float = 0.1
    theta: float = 0.5
    shared_weights: bool = True
    readout: str | None = None
    widths: list[int] | None = None
    k: int | None = None
    emb_channels: int | None = None
    head: list[int] | None = None
    layers: list[dict[str, Any]] | None = None

    # Fields the weights of a PyG checkpoint cannot reveal (docs/export.md).
    NOT_IN_WEIGHTS: ClassVar[tuple[str, ...]] = ('act', 'aggr', 'dropout',
                                                 'alpha', 'theta', 'readout',
                                                 'k')

    @property
    def uses_graph(self) -> bool:
        return self.arch not in GRAPHLESS

    def __post_init__(self) -> None:
        if self.arch not in ALL_ARCHS:
            raise ArchitectureError(f"Unknown architecture '{self.arch}' "
                                    f"(choose from {', '.join(ALL_ARCHS)})")
        for name in ('in_channels', 'hidden_channels', 'num_layers',
                     'out_channels', 'heads'):
            if int(getattr(self, name)) < 1:
                raise ArchitectureError(
                    f"'{name}' must be at least 1 (got {getattr(self, name)})")
        if self.arch == SEQUENCE and not self.layers:
            raise ArchitectureError(
                "A 'sequence' model is read from a teacher's weights; it "
                f"has no layers here: choose from {', '.join(ARCHS)}")
        if self.arch in ('sage', SEQUENCE) and \
                self.aggr not in SAGE_AGGRS:
            raise ArchitectureError(
                f"Unknown SAGE aggregation '{self.aggr}' (choose from "
                f"{', '.join(SAGE_AGGRS)}; 'gcn' averages over the node "
                f'and its neighbours with one weight)')
        if self.norm is not None and self.norm not in NORMS:
            raise ArchitectureError(
                f"Unknown norm '{self.norm}' (choose from "
                f"{', '.join(NORMS)}, or leave --norm out)")
        if self.jk is not None and self.jk not in JK_MODES:
            raise ArchitectureError(
                f"Unknown jumping knowledge '{self.jk}' (choose from "
                f"{', '.join(JK_MODES)}, or leave --jk out)")
        if isinstance(self.dropout, (int, float)) and \
                not 0 <= self.dropout <= 1:
            raise ArchitectureError(
                f'dropout is a probability of dropping a feature, from 0 '
                f'to 1 (got {self.dropout}): give one in that range, e.g. '
                f'0.5')
        if self.norm == 'layer_norm' and self.readout is not None:
            raise ArchitectureError(
                'layer_norm normalises each graph of a batch apart, which '
                'the graph-level models do not do: use --norm batch_norm '
                'with a readout')
        if self.arch in POINT_ARCHS:
            _check_dgcnn(self)
        elif self.readout is not None:
            check_readout(self.readout)
            if self.arch not in BASIC_GNN_ARCHS or self.jk is not None:
                raise ArchitectureError(
                    f'A graph-level readout needs a message-passing model '
                    f"without jk ({', '.join(BASIC_GNN_ARCHS)}; got "
                    f"'{self.arch}'): pick one of those with --arch")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ArchSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ArchitectureError(
                f"Unknown ArchSpec field(s) {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchitectureError(f'ArchSpec is not valid JSON ({e})') \
                from None
        if not isinstance(values, dict):
            raise ArchitectureError('ArchSpec JSON must be an object')
        return cls.from_dict(values)

    def layer_lines(self) -> list[str]:
        """A sequence's layers, one line each (``inspect``)."""
        from gnncompress.models.sequence import describe_layers
        return describe_layers(self.layers or [])

    def describe(self) -> str:
        if self.arch == SEQUENCE:
            from gnncompress.models.sequence import count_titles
            return (f'Layer sequence: {count_titles(self.layers or [])}, '
                    f'{self.in_channels} -> {self.out_channels} '
                    f'(act={self.act})')
        if self.arch in POINT_ARCHS:
            return (f"DGCNN {self.num_layers} EdgeConv layers "
                    f"{','.join(map(str, self.widths or []))} (k={self.k}), "
                    f"embedding {self.emb_channels}, head "
                    f"{','.join(map(str, self.head or [])) or 'none'}, "
                    f'{self.in_channels} -> {self.out_channels} '
                    f'(readout={self.readout})')
        heads = f' x {self.heads} heads' if self.arch in ('gat', 'gatv2') \
            else ''
        extras = [f'{k}={getattr(self, k)}' for k in ('norm', 'jk')
                  if getattr(self, k) is not None]
        if self.arch == 'sage':
            extras.append(f'aggr={self.aggr}')
        if self.readout is not None:
            extras.append(f'readout={self.readout}')
        tail = f" ({', '.join(extras)})" if extras else ''
        return (f'{self.arch.upper()} {self.num_layers} layers x '
                f'{self.hidden_channels} hidden{heads}, '
                f'{self.in_channels} -> {self.out_channels}{tail}')


def _check_dgcnn(spec: ArchSpec) -> None:
    """Validate (and normalise) the DGCNN fields of an ArchSpec."""
    if not isinstance(spec.widths, (list, tuple)) or not spec.widths or \
            len(spec.widths) != spec.num_layers:
        raise ArchitectureError(
            f'A DGCNN needs one EdgeConv width per layer: got widths '
            f'{spec.widths!r:.40} for {spec.num_layers} layers (e.g. '
            f'--layers 4 --hidden 64,64,128,256)')
    if not isinstance(spec.head, (list, tuple, type(None))):
        raise ArchitectureError(f"DGCNN 'head' must be a list of widths "
                                f'(got {spec.head!r:.40})')
    spec.widths = [_whole(w, 'widths') for w in spec.widths]
    spec.head = [_whole(w, 'head') for w in (spec.head or [])]
    spec.k = 20 if spec.k is None else _whole(spec.k, 'k')
    spec.emb_channels = 1024 if spec.emb_channels is None \
        else _whole(spec.emb_channels, 'emb_channels')
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


def _whole(value: Any, name: str) -> int:
    """``value`` as an int, when it is a whole number (not a bool, a text
    or a fraction)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or int(value) != value:
        raise ArchitectureError(f"DGCNN '{name}' must hold whole numbers "
                                f'(got {value!r:.40})')
    return int(value)
