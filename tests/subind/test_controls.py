import pytest
import torch

from subind.controls import complement_masks, inverted_random_masks, random_masks


def _masks():
    gen = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.rand(20, 30, generator=gen) < 0.1,
        "b.weight": torch.rand(50, generator=gen) < 0.3,
        "c.weight": torch.zeros(4, 4, dtype=torch.bool),
    }


@pytest.mark.parametrize("fn", [random_masks, complement_masks])
def test_controls_keep_per_tensor_counts(fn):
    masks = _masks()
    out = fn(masks, seed=1)
    for name, m in masks.items():
        assert out[name].shape == m.shape and out[name].dtype == torch.bool
        assert int(out[name].sum()) == int(m.sum()), name  # exactly k, not N - k


def test_complement_is_disjoint_from_subnetwork():
    masks = _masks()
    out = complement_masks(masks, seed=1)
    for name, m in masks.items():
        assert not (out[name] & m).any(), name


def test_random_control_is_not_the_subnetwork_and_depends_on_seed():
    masks = _masks()
    a, b = random_masks(masks, seed=1), random_masks(masks, seed=2)
    assert not torch.equal(a["a.weight"], masks["a.weight"])
    assert not torch.equal(a["a.weight"], b["a.weight"])
    assert torch.equal(a["a.weight"], random_masks(masks, seed=1)["a.weight"])


def test_inverted_control_transfers_n_minus_k():
    masks = _masks()
    out = inverted_random_masks(masks, seed=0)
    for name, m in masks.items():
        assert int(out[name].sum()) == m.numel() - int(m.sum())


def test_complement_impossible_for_dense_tensor():
    dense = {"w": torch.ones(10, dtype=torch.bool)}
    dense["w"][0] = False
    with pytest.raises(ValueError, match="complement control impossible"):
        complement_masks(dense, seed=0)
