import datetime

import pytest

from subind import runtime


def test_each_rank_gets_its_own_gpu():
    name = runtime.device_name
    assert name(None, 3, True) == "cuda:3" and name("auto", 3, False) == "cpu"
    assert name("cuda", 2, True) == "cuda:2" and name("cuda:0", 2, True) == "cuda:0"
    assert name("cpu", 1, True) == "cpu"


def test_outside_torchrun_one_process_and_no_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert runtime.dist_env() == (0, 1, 0)
    assert runtime.init_distributed() == (0, 1)
    assert not runtime.dist.is_initialized()
    runtime.barrier(1)  # a no-op for one process


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.dist_env() == (3, 4, 1)


def test_process_group_timeout_is_long_by_default(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        runtime.dist, "init_process_group", lambda b, timeout: seen.update(b=b, t=timeout)
    )
    monkeypatch.setattr(runtime.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(runtime.dist, "get_world_size", lambda: 2)
    assert runtime.init_distributed("gloo") == (1, 2)
    assert seen == {"b": "gloo", "t": runtime.DEFAULT_TIMEOUT}
    assert datetime.timedelta(hours=12) <= runtime.DEFAULT_TIMEOUT
    runtime.init_distributed("gloo", timeout=datetime.timedelta(seconds=5))
    assert seen["t"] == datetime.timedelta(seconds=5)


@pytest.mark.parametrize("name", ["cpu", "auto"])
def test_resolve_device_on_a_cpu_machine(name, monkeypatch):
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device(name).type == "cpu"
