"""Parallel fits (invae.inference.parallel): W processes make one process's computation, split by rows.

The multi-process tests start 2 processes on this machine (gloo over TCP on localhost, a
file rendezvous in tmp_path), each importing torch: about 10–20 s each.
"""

import os
import signal
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from invae.inference.checkpoints import Checkpointer, ProcessLost
from invae.inference.estimator import VariationalEB
from invae.inference.parallel import Shard, ShardNoise, reparameterised
from invae.inference.posteriors import IAFEncoder
from invae.model.forward import LinearOperator
from invae.model.ggm import GaussianGraphicalModel
from invae.model.likelihoods import GaussianLikelihood

_N, _P = 300, 5


def _fresh_noise(shape, like):
    return torch.randn((*shape, *like.shape), dtype=like.dtype, device=like.device)


@pytest.mark.parametrize("kind", ["diagonal", "full", "low-rank", "flow"])
def test_reparameterised_draws_are_rsample_from_the_same_noise(kind):
    torch.manual_seed(1)
    loc, spread = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    if kind == "diagonal":
        q = Independent(Normal(loc, spread), 1)
    elif kind == "full":
        q = MultivariateNormal(loc, scale_tril=torch.diag_embed(spread) + torch.randn(4, 3, 3).tril(-1))
    elif kind == "low-rank":
        q = LowRankMultivariateNormal(loc, torch.randn(4, 3, 2), spread.square())
    else:
        q = IAFEncoder(2, 3, hidden=(8,), n_steps=2)(torch.randn(4, 2))
    torch.manual_seed(2)
    expected = q.rsample((5,))
    torch.manual_seed(2)
    torch.testing.assert_close(reparameterised(q, (5,), _fresh_noise), expected, rtol=0, atol=0)


def test_shards_take_their_rows_of_one_batch_and_of_its_noise():
    n, world, index = 10, 3, torch.tensor([9, 0, 4, 4, 7, 2, 5, 1])
    bounds = [0, 3, 7, 10]
    shards = [Shard(rank, world, bounds[rank], bounds[rank + 1], n) for rank in range(world)]
    torch.manual_seed(3)
    whole = torch.randn(2, len(index), 4)
    seen = torch.zeros(len(index), dtype=torch.bool)
    for shard in shards:
        positions, rows = shard.local(index)
        assert torch.equal(rows + shard.start, index[positions])
        assert bool(((rows >= 0) & (rows < shard.stop - shard.start)).all())
        seen[positions] = True
        torch.manual_seed(3)
        noise = ShardNoise(len(index), positions)((2,), torch.zeros(len(positions), 4))
        assert torch.equal(noise, whole[:, positions])
    assert bool(seen.all())  # every row of the batch in exactly one shard (the bounds partition 0..n)


def test_a_family_that_draws_its_own_noise_refuses_several_processes():
    estimator = VariationalEB(GaussianGraphicalModel(dim=_P), GaussianLikelihood(LinearOperator(torch.eye(_P)), 1.0),
                              family="mixture")
    with pytest.raises(ValueError, match="mixture does not fit over several processes; full-covariance, iaf, low-rank, "
                                         "vae do"):
        estimator._check_parallel(Shard(0, 2, 0, 150, 300))


def _data() -> np.ndarray:
    return np.random.default_rng(5).normal(size=(_N, _P))


def _estimator(family: str, **options) -> VariationalEB:
    # closed_form=False: φ takes Adam steps (the diagonal family's q would be set in closed form)
    return VariationalEB(GaussianGraphicalModel(dim=_P, alpha=0.02),
                         GaussianLikelihood(LinearOperator(torch.eye(_P)), 1.0), family=family, random_state=3,
                         max_iter=6, batch_size=64, n_critic=5, closed_form=False, hidden=(16,),
                         dtype=torch.float64, **options)


def _fit(family: str, x: np.ndarray, **options) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 6 iterations: not converged
        return _estimator(family, **options).fit(x).prior_.precision.numpy()


def _in_process_group(rank: int, world: int, store: str, task, *args) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # as tests/conftest.py sets it in this process
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        task(rank, world, *args)
    finally:
        dist.destroy_process_group()


def _run_processes(tmp_path, task, *args, world: int = 2) -> None:
    torch.multiprocessing.spawn(_in_process_group, args=(world, str(tmp_path / "store"), task, *args), nprocs=world)


def _fit_shards(rank, world, families, folder):
    rows = np.array_split(np.arange(_N), world)[rank]
    for family in families:
        np.save(f"{folder}/{family}-{rank}.npy", _fit(family, _data()[rows]))


def test_two_processes_give_one_process_precision(tmp_path):
    """vae (no draws: Gaussian ELBO in closed form) and iaf (draws in the Adam steps and the
    importance-weighted Λ-step): the same Λ̂ to float64 round-off, on every rank."""
    families = ["diagonal", "iaf"]
    _run_processes(tmp_path, _fit_shards, families, str(tmp_path))
    for family in families:
        alone = _fit(family, _data())
        for rank in range(2):
            together = np.load(tmp_path / f"{family}-{rank}.npy")
            np.testing.assert_allclose(together, alone, rtol=0, atol=1e-11)  # round-off: sums in another order
        assert np.abs(alone - np.eye(_P)).max() > 0.05  # Λ̂ moved: a comparison of fits, not of start values


def _killed_at(iteration: int):
    def callback(step, prior):
        if step == iteration and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return callback


def _fit_until_killed(rank, world, folder):
    rows = np.array_split(np.arange(_N), world)[rank]
    estimator = _estimator("diagonal", checkpoint_dir=folder, checkpoint_every=100, callback=_killed_at(3))
    try:
        estimator.fit(_data()[rows])
    except ProcessLost as error:
        (folder / "error.txt").write_text(str(error))


def test_a_killed_process_stops_the_fit_with_one_line_and_a_checkpoint_that_resumes(tmp_path):
    with pytest.raises(mp.ProcessExitedException, match="process 1 terminated with signal SIGKILL"):
        _run_processes(tmp_path, _fit_until_killed, tmp_path)
    message = (tmp_path / "error.txt").read_text()
    assert "\n" not in message
    assert message.startswith("another process of the fit stopped (")
    assert message.endswith(f"the state after outer iteration 3 is in {Checkpointer(tmp_path).path}: resume "
                            "with --resume")
    # resumed by one process (the run does not depend on how many): the uninterrupted fit's Λ̂
    resumed = _fit("diagonal", _data(), checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_allclose(resumed, _fit("diagonal", _data()), rtol=0, atol=1e-11)
