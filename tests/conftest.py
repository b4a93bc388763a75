import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Two cores are easily oversubscribed; tiny models are fastest on one thread anyway.
    torch.set_num_threads(1)
    yield
