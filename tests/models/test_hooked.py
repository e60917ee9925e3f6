import torch
from torch import nn
from torch_geometric.nn import GCNConv

from gnncompress.models.hooked import HookedTeacher


class Net(nn.Module):  # a user's own model: two conv attributes, ELU
    def __init__(self):
        super().__init__()
        self.conv1 = GCNConv(5, 8)
        self.conv2 = GCNConv(8, 3)

    def forward(self, x, edge_index):
        h = nn.functional.elu(self.conv1(x, edge_index))
        return self.conv2(h, edge_index)


def test_hooked_teacher_gives_logits_and_pre_activation_hiddens():
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(6, 5)
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    hooked = HookedTeacher(net)
    assert torch.equal(hooked(x, edge_index), net(x, edge_index))
    out = hooked.forward_output(x, edge_index)
    assert torch.allclose(out.logits, net(x, edge_index), atol=1e-6)
    assert len(out.hiddens) == 1
    assert torch.allclose(out.hiddens[0], net.conv1(x, edge_index),
                          atol=1e-6)
    assert not net.conv1._forward_hooks  # hooks removed after the call
