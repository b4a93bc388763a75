import pytest

from meanpool.config import IndexConfig
from meanpool.imagenet import ImageNetError, Item, build_index, scan, sixteen_classes

from .conftest import make_imagenet


def test_sixteen_classes_from_package_data():
    order, wnid_to_cat = sixteen_classes()
    assert len(order) == 16 and order[0] == "airplane" and order[-1] == "truck"
    assert wnid_to_cat["n02690373"] == "airplane" and len(set(wnid_to_cat.values())) == 16


@pytest.mark.parametrize("flat_val", [False, True])
def test_scan_finds_train_and_both_val_layouts(tmp_path, flat_val):
    root = make_imagenet(tmp_path / "in", per_class=2, val_per_class=1, flat_val=flat_val)
    splits = scan(root)
    assert len(splits["train"]) == 32 and len(splits["val"]) == 16  # n99999999 is ignored
    assert all(it.rel.startswith("train/") for it in splits["train"])
    assert {it.label for it in splits["val"]} == set(range(16))
    assert splits["train"] == sorted(splits["train"], key=lambda it: it.rel)


def test_flat_val_without_labels_is_a_clear_error(tmp_path):
    root = make_imagenet(tmp_path / "in", per_class=1, val_per_class=1, flat_val=True)
    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(ImageNetError, match="--val-labels"):
        scan(root)
    devkit = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    devkit.write_text("490\n361\n")
    with pytest.raises(ImageNetError, match="devkit class IDs"):
        scan(root, devkit)
    labels = tmp_path / "labels.txt"
    lines = [f"{p.name} n02690373" for p in sorted((root / "val").iterdir())]
    labels.write_text("\n".join(lines))
    assert {it.category for it in scan(root, labels)["val"]} == {"airplane"}


def test_subsets_are_balanced_disjoint_and_seeded(tmp_path):
    root = make_imagenet(tmp_path / "in", per_class=6, val_per_class=0)
    cfg = IndexConfig(discovery_per_class=3, evaluation_per_class=2, seed=7)
    idx = build_index(root, cfg)
    disc, ev = idx["discovery"], idx["evaluation"]
    assert len(disc) == 48 and len(ev) == 32
    for subset, n in ((disc, 3), (ev, 2)):
        assert all(sum(it.label == k for it in subset) == n for k in range(16))
    assert not {it.rel for it in disc} & {it.rel for it in ev}
    assert {it.rel for it in disc} | {it.rel for it in ev} <= {it.rel for it in idx["train"]}
    assert build_index(root, cfg) == idx
    other = build_index(root, IndexConfig(discovery_per_class=3, evaluation_per_class=2, seed=8))
    assert [it.rel for it in other["discovery"]] != [it.rel for it in disc]
    assert len({it.label for it in disc[:16]}) > 4  # first N are class-mixed, for --limit


def test_too_few_images_for_the_subsets_is_a_clear_error(tmp_path):
    root = make_imagenet(tmp_path / "in", per_class=2, val_per_class=0)
    with pytest.raises(ImageNetError, match="lower --discovery-per-class"):
        build_index(root, IndexConfig(discovery_per_class=2, evaluation_per_class=1))


def test_missing_train_folder(tmp_path):
    with pytest.raises(ImageNetError, match="no train/ folder"):
        scan(tmp_path)


def test_keys_have_no_dots():
    item = Item("train/n01/n01_1.JPEG", "n01", "bird", 3)
    assert item.key == "train_n01_n01_1_JPEG"
