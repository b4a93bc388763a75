import tarfile

from meanpool.shards import (
    ShardWriter,
    complete_shards,
    next_shard_number,
    remove_partial,
    shard_keys,
)


def _sample(i):
    return {"__key__": f"k{i:03d}", "jpg": b"x" * i, "cls": b"1", "json": b"{}"}


def test_shards_are_complete_tars_of_the_given_size(tmp_path):
    w = ShardWriter(tmp_path, "discovery", 0, shard_size=3)
    for i in range(7):
        w.write(_sample(i))
    assert len(complete_shards(tmp_path)) == 2  # the third is still being written...
    assert len(list(tmp_path.glob("*.tar.tmp"))) == 1
    w.close()
    shards = complete_shards(tmp_path)
    assert [p.name for p in shards] == [f"discovery-r000-00000{i}.tar" for i in range(3)]
    assert [len(shard_keys(p)) for p in shards] == [3, 3, 1]
    assert shard_keys(shards[0]) == ["k000", "k001", "k002"]
    with tarfile.open(shards[2]) as tar:
        assert sorted(tar.getnames()) == ["k006.cls", "k006.jpg", "k006.json"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_killed_writer_leaves_only_a_tmp_file_that_resume_removes(tmp_path):
    w = ShardWriter(tmp_path, "val", 1, shard_size=10)
    w.write(_sample(1))
    w._file.flush()  # a crash now: the shard never gets its final name
    assert complete_shards(tmp_path) == []
    assert [p.name for p in remove_partial(tmp_path)] == ["val-r001-000000.tar.tmp"]
    assert next_shard_number(tmp_path, "val", 1) == 0


def test_new_writers_continue_numbering(tmp_path):
    for _ in range(2):
        w = ShardWriter(tmp_path, "train", 2, shard_size=1)
        w.write(_sample(0))
        w.close()
    assert (
        next_shard_number(tmp_path, "train", 2) == 2
        and next_shard_number(tmp_path, "train", 0) == 0
    )
