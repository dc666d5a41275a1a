import warnings

import numpy as np
import pytest
import torch

from invae import (FunctionOperator, GaussianGraphicalModel, GaussianLikelihood, GaussianMixture, LinearOperator,
                   PoissonLikelihood, StudentTLikelihood, linear_gaussian, simulate_problem)
from invae.app.methods import make_estimator, methods
from invae.app.persistence import load_model, save_model
from invae.app.plugins import load_function

# Short fits: the round trip is what is tested, not convergence.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def problem():
    return simulate_problem(p=5, n=300, graph="chain", forward="gaussian", m=7, noise_std=0.5, seed=2)


@pytest.mark.parametrize("method", [name for name, method in methods().items() if not method.paths])
def test_a_saved_model_answers_like_the_fitted_one(problem, tmp_path, method):
    likelihood = linear_gaussian(problem.A, 0.5)
    fitted = make_estimator(method, GaussianGraphicalModel(dim=5, alpha=0.05), likelihood, max_iter=30, seed=4)
    fitted.fit(problem.X)
    loaded = load_model(save_model(fitted, tmp_path / "model.pt"))
    new = np.random.default_rng(0).standard_normal((40, 7))
    # identical arithmetic on identical parameters (Monte Carlo moments and mean-field
    # factors use the saved seed), so the answers agree to the last bit
    for got, expected in zip(loaded.posterior(new), fitted.posterior(new)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(loaded.precision_, fitted.precision_)
    assert loaded.prior_.alpha == 0.05


def test_files_that_are_not_models_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(3))
    with pytest.raises(ValueError, match="not an invae model"):
        load_model(tmp_path / "x.npy")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an invae model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no such file"):
        load_model(tmp_path / "missing.pt")


class _Payload:  # an arbitrary object: unpickling it would run code a file chose
    def __reduce__(self):
        return (print, ("this ran",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path, capsys):
    torch.save({"format": "invae-model", "payload": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not an invae model"):
        load_model(tmp_path / "evil.pt")
    assert "this ran" not in capsys.readouterr().out


def test_a_newer_format_version_is_named(problem, tmp_path):
    fitted = make_estimator("em", GaussianGraphicalModel(dim=5), linear_gaussian(problem.A, 0.5)).fit(problem.X)
    path = save_model(fitted, tmp_path / "model.pt")
    record = torch.load(path, weights_only=True)
    record["version"] = 99
    torch.save(record, path)
    with pytest.raises(ValueError, match="version 99"):
        load_model(path)


def test_a_model_whose_weights_do_not_match_is_one_clear_error(problem, tmp_path):
    fitted = make_estimator("vae", GaussianGraphicalModel(dim=5), linear_gaussian(problem.A, 0.5), max_iter=5)
    path = save_model(fitted.fit(problem.X), tmp_path / "model.pt", data_shape=problem.X.shape)
    record = torch.load(path, weights_only=True)
    assert record["data_shape"] == [300, 7] and record["invae_version"]
    key = next(k for k in record["posterior"] if k.endswith("weight"))
    record["posterior"][key] = torch.zeros(3, 3)  # a weight of the wrong shape
    torch.save(record, path)
    with pytest.raises(ValueError, match="does not fit its own settings: .*size mismatch"):
        load_model(path)


@pytest.mark.parametrize("method", ["em", "iaf"])
def test_a_saved_mixture_model_answers_like_the_fitted_one(problem, tmp_path, method):
    likelihood = linear_gaussian(problem.A, 0.5)
    start = GaussianMixture.from_signals(likelihood.forward.pinv(torch.as_tensor(problem.X)), 2, alpha=0.05)
    fitted = make_estimator(method, start, likelihood, max_iter=20, seed=4).fit(problem.X)
    loaded = load_model(save_model(fitted, tmp_path / "model.pt"))
    new = np.random.default_rng(0).standard_normal((40, 7))
    for got, expected in zip(loaded.posterior(new), fitted.posterior(new)):
        np.testing.assert_array_equal(got, expected)
    for key, value in fitted.prior_.state().items():
        torch.testing.assert_close(loaded.prior_.state()[key], value, rtol=0, atol=0)
    assert (loaded.prior_.alpha, loaded.prior_.reg_covar) == (0.05, fitted.prior_.reg_covar)


def test_a_version_1_file_still_loads(problem, tmp_path):
    fitted = make_estimator("em", GaussianGraphicalModel(dim=5, alpha=0.05), linear_gaussian(problem.A, 0.5))
    path = save_model(fitted.fit(problem.X), tmp_path / "model.pt")
    record = torch.load(path, weights_only=True)
    # the layout version 1 wrote: Λ̂ under "precision", the prior's settings and the likelihood under their own keys
    record.update(version=1, precision=record.pop("parameters")["precision"], **record.pop("prior_config"),
                  **_likelihood_before_4(record.pop("likelihood")))
    del record["prior"]
    torch.save(record, path)
    np.testing.assert_array_equal(load_model(path).precision_, fitted.precision_)


def test_a_version_5_file_still_loads(problem, tmp_path):
    fitted = make_estimator("em", GaussianGraphicalModel(dim=5, alpha=0.05), linear_gaussian(problem.A, 0.5))
    path = save_model(fitted.fit(problem.X), tmp_path / "model.pt")
    record = torch.load(path, weights_only=True)
    record["version"] = 5  # version 6 added a path's nested operator: the other records are as version 5 wrote them
    torch.save(record, path)
    np.testing.assert_array_equal(load_model(path).transform(problem.X), fitted.transform(problem.X))


def test_a_path_model_keeps_its_per_time_operator(tmp_path):
    from invae.model.missing import MissingEntries
    from invae.paths.observation import PathOperator, series_rows
    from invae.paths.prior import PathPrior
    from invae.paths.sde import OrnsteinUhlenbeck

    times = torch.tensor([0.0, 1.0, 1.5, 3.0, 4.0])
    generator = torch.Generator().manual_seed(1)
    z = OrnsteinUhlenbeck(2, drift=0.5).simulate(30, times, generator=generator)
    a = torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
    x = (z @ a.T + 0.2 * torch.randn(30, 5, 3, generator=generator)).numpy()
    x[0, 1, 2] = np.nan
    likelihood = MissingEntries(GaussianLikelihood(PathOperator(LinearOperator(a), 5, 2), 0.2))
    rows = likelihood.rows(series_rows(x), fitting=False)
    fitted = make_estimator("kalman", PathPrior(OrnsteinUhlenbeck(2), times, 2), likelihood).fit(rows)
    path = save_model(fitted, tmp_path / "model.pt")
    record = torch.load(path, weights_only=True)
    assert record["version"] == 6 and record["prior"] == "ou" and record["method"] == "kalman"
    assert record["likelihood"]["forward"]["steps"] == 5 and record["likelihood"]["forward"]["substeps"] == 2
    loaded = load_model(path)
    operator = loaded.likelihood.forward
    assert isinstance(operator, PathOperator) and torch.equal(operator.per_time.matrix, a)
    for got, expected in zip(loaded.posterior(rows), fitted.posterior(rows)):
        np.testing.assert_array_equal(got, expected)


def _likelihood_before_4(likelihood: dict) -> dict:
    """A linear-Gaussian likelihood as format versions 1 to 3 kept it."""
    return {"forward": likelihood["forward"]["matrix"], "noise_std": likelihood["constants"]["noise_std"],
            "noise_per_row": False}


def test_a_version_3_mixture_file_still_loads(problem, tmp_path):
    likelihood = linear_gaussian(problem.A, 0.5)
    start = GaussianMixture.from_signals(likelihood.forward.pinv(torch.as_tensor(problem.X)), 2, alpha=0.05)
    fitted = make_estimator("em", start, likelihood, max_iter=5).fit(problem.X)
    path = save_model(fitted, tmp_path / "model.pt")
    record = torch.load(path, weights_only=True)
    # version 3 kept α, the solver, ε, A and σ under their own keys
    record.update(version=3, **record.pop("prior_config"), **_likelihood_before_4(record.pop("likelihood")))
    torch.save(record, path)
    loaded = load_model(path)
    assert (loaded.prior_.alpha, loaded.prior_.reg_covar) == (0.05, fitted.prior_.reg_covar)
    np.testing.assert_array_equal(loaded.transform(problem.X), fitted.transform(problem.X))


def test_counts_and_a_forward_function_from_a_file_round_trip(problem, tmp_path):
    # Non-Gaussian noise and a user's function are saved too: the function by FILE.py:NAME,
    # imported again on loading (with a warning: that runs the file).
    np.save(tmp_path / "a.npy", problem.A)
    (tmp_path / "sensor.py").write_text("import numpy as np, torch\n"
                                        f"A = torch.from_numpy(np.load({str(tmp_path / 'a.npy')!r}))\n"
                                        "def forward(z):\n    return torch.tanh(z @ A.to(z).T)\n")
    spec = f"{tmp_path / 'sensor.py'}:forward"
    counts = np.random.default_rng(1).poisson(2.0, size=(300, 7)).astype(float)
    for likelihood, x in ((PoissonLikelihood(LinearOperator(problem.A)), counts),
                          (StudentTLikelihood(FunctionOperator(load_function(spec), 5, source=spec), 3.0, 0.5),
                           np.tanh(problem.X))):
        fitted = make_estimator("vae", GaussianGraphicalModel(dim=5, alpha=0.05), likelihood, max_iter=5).fit(x)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load_model(save_model(fitted, tmp_path / "model.pt"))
        assert [str(w.message) for w in caught if "is run" in str(w.message)] == \
            ([] if isinstance(likelihood, PoissonLikelihood) else [f"the model's forward function is imported from {spec!r}: that file is run"])
        assert type(loaded.likelihood_) is type(likelihood) and loaded.likelihood_.constants() == likelihood.constants()
        for got, expected in zip(loaded.posterior(x), fitted.posterior(x)):
            np.testing.assert_array_equal(got, expected)


def test_a_forward_function_without_a_source_cannot_be_saved(problem, tmp_path):
    likelihood = GaussianLikelihood(FunctionOperator(lambda z: z @ torch.as_tensor(problem.A).to(z).T, 5), 0.5)
    fitted = make_estimator("vae", GaussianGraphicalModel(dim=5), likelihood, max_iter=3).fit(problem.X)
    with pytest.raises(ValueError, match="cannot be saved: only one read from a file"):
        save_model(fitted, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
