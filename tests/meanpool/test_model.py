import pytest
import torch

from meanpool.model import CheckpointError, build_tiny_sam, load_sam


def test_checkpoint_round_trip(tiny_ckpt):
    sam = load_sam("tiny_test", tiny_ckpt)
    ref = build_tiny_sam(seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(sam.state_dict().values(), ref.state_dict().values(), strict=True)
    )


def test_checkpoint_of_another_size_is_a_one_line_error(tiny_ckpt):
    with pytest.raises(CheckpointError) as exn:
        load_sam("vit_b", tiny_ckpt)
    msg = str(exn.value)
    assert (
        "does not fit --model-type vit_b" in msg
        and "--model-type tiny_test" in msg
        and "\n" not in msg
    )


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sam("vit_h", tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read SAM checkpoint"):
        load_sam("vit_h", bad)
    with pytest.raises(CheckpointError, match="unknown model type"):
        load_sam("vit_x", bad)


def test_wrapped_state_dict_is_accepted(tmp_path, tiny_ckpt):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": torch.load(tiny_ckpt, weights_only=True)}, path)
    assert load_sam("tiny_test", path) is not None
