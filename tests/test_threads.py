import pytest
import torch

from invae.threads import fit_threads, using_threads


def test_one_thread_unless_told(monkeypatch):
    monkeypatch.delenv("INVAE_NUM_THREADS", raising=False)
    assert fit_threads() == 1
    assert fit_threads(3) == 3
    monkeypatch.setenv("INVAE_NUM_THREADS", "2")
    assert fit_threads() == 2
    assert fit_threads(1) == 1


@pytest.mark.parametrize("given, env, message", [(0, None, "got 0"), (None, "many", "INVAE_NUM_THREADS")])
def test_a_bad_count_is_refused_in_one_line(monkeypatch, given, env, message):
    monkeypatch.setenv("INVAE_NUM_THREADS", env or "1")
    with pytest.raises(ValueError, match=message):
        fit_threads(given)


def test_the_previous_count_comes_back():
    before = torch.get_num_threads()
    with using_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
