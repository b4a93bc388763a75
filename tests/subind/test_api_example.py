"""The README's example, end to end on a user's own (tiny) model."""

import torch
import torch.nn.functional as F
from torch import nn

from subind import (
    DiscoveryConfig,
    MaskSelection,
    Subnetwork,
    TrainConfig,
    discover,
    fit,
    random_masks,
    select_parameters,
    transfer,
)


class MyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).flatten(1))


def test_readme_flow_on_a_small_convnet(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 4, 4, generator=gen)
    y_source = (x[:, 0, 0, 0] + x[:, 0, 3, 3] > 0).long()
    y_sub = (x[:, 0, 0, 0] > 0).long()
    torch.manual_seed(0)
    model = MyNet()
    batches = lambda y: lambda epoch: [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]  # noqa: E731
    loss_fn = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
    acc = lambda y: lambda m: float((m(x).argmax(-1) == y).float().mean())  # noqa: E731
    fit(
        model,
        batches(y_source),
        loss_fn,
        acc(y_source),
        TrainConfig(epochs=30, lr=1e-2),
        progress=False,
    )
    assert acc(y_source)(model) > 0.9

    names = select_parameters(model, MaskSelection(module_types=("Linear", "Conv2d")))
    assert names == ["conv.weight", "head.weight"]
    sub = discover(
        model, names, batches(y_sub), loss_fn, acc(y_sub),
        DiscoveryConfig(epochs=10, lr=0.05, penalty=1e-4), progress=False,
    )  # fmt: skip
    sub.save(tmp_path / "sub")
    sub = Subnetwork.load(tmp_path / "sub")
    torch.manual_seed(1)
    new = transfer(model, MyNet(), sub.masks, unmasked="reinit")
    result = fit(
        new, batches(y_sub), loss_fn, acc(y_sub), TrainConfig(epochs=3, lr=1e-2), progress=False
    )
    assert 0.0 <= result.best_accuracy <= 1.0 and len(result.history) == 3
    conv = dict(model.named_parameters())["conv.weight"]
    m = sub.masks["conv.weight"]
    assert torch.equal(new.conv.weight[m], conv[m])  # frozen entries after training
    control = transfer(model, MyNet(), random_masks(sub.masks, seed=0), unmasked="reinit")
    frozen = random_masks(sub.masks, seed=0)["conv.weight"]
    assert int(frozen.sum()) == int(m.sum())  # as many entries as the subnetwork keeps
    assert torch.equal(control.conv.weight[frozen], conv[frozen])
