"""Fixtures shared by every test module."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as training defaults to and the explorer is benchmarked (two threads
    thrash on a busy 2-core machine); restored after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
