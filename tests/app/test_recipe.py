import numpy as np
import pytest

from invae.app.recipe import RowRecipe, RowSources, check_sources, make_rows
from invae.model.forward import LinearOperator
from invae.model.likelihoods import PoissonLikelihood


def test_rows_are_the_counts_their_offsets_then_the_covariates(tmp_path):
    x = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 8.0]])
    (tmp_path / "c.csv").write_text("group,dose\na,0.5\nb,1.0\na,2.0\n")
    likelihood = PoissonLikelihood(LinearOperator(np.eye(2)), offsets=True)
    with pytest.warns(UserWarning, match="3 location parameters for 3 rows"):  # 3 rows: a toy
        rows, recipe = make_rows(x, likelihood, RowSources(offsets="log-total", covariates=tmp_path / "c.csv"))
    offsets = np.log(x.sum(1) / 16 * 3)  # totals 4, 4, 8 over their mean 16/3
    np.testing.assert_allclose(rows, np.column_stack([x, offsets, offsets, [0, 1, 0], [0.5, 1.0, 2.0]]))
    assert recipe.mean_total == pytest.approx(16 / 3) and recipe.covariates.names == ["group=b", "dose"]
    (tmp_path / "c1.csv").write_text("dose,group\n0.5,a\n")
    again, _ = make_rows(x[:1], likelihood, RowSources(offsets="log-total", covariates=tmp_path / "c1.csv"), recipe)
    np.testing.assert_allclose(again, rows[:1])  # one row offset by the fit's mean total, not its own
    assert RowRecipe.from_record(recipe.to_record()) == recipe


def test_a_row_without_counts_has_no_log_total_offset():
    likelihood = PoissonLikelihood(LinearOperator(np.eye(2)), offsets=True)
    with pytest.raises(ValueError, match="needs every row to have counts: row 1 sums to 0"):
        make_rows(np.array([[1.0, 3.0], [0.0, 0.0]]), likelihood, RowSources(offsets="log-total"))


def test_new_rows_must_bring_what_the_models_rows_had():
    plain, counted = LinearOperator(np.eye(2)), PoissonLikelihood(LinearOperator(np.eye(2)), offsets=True)
    with pytest.raises(ValueError, match="had --offsets: give the new rows' with --offsets"):
        check_sources(counted, RowRecipe(), RowSources())
    with pytest.raises(ValueError, match="had no --offsets: leave it out"):
        check_sources(PoissonLikelihood(plain), RowRecipe(), RowSources(offsets="log-total"))
    check_sources(counted, RowRecipe(), RowSources(offsets="log-total"))


def test_log_total_offsets_need_every_count_and_predict_takes_a_column_missing_everywhere():
    from invae.model.missing import MissingEntries

    x = np.array([[1.0, np.nan], [2.0, 3.0]])
    counted = MissingEntries(PoissonLikelihood(LinearOperator(np.eye(2)), offsets=True))
    with pytest.raises(ValueError, match="log-total needs every count of a row"):
        make_rows(x, counted, RowSources(offsets="log-total"))
    plain = MissingEntries(PoissonLikelihood(LinearOperator(np.eye(2))))
    new = np.array([[1.0, np.nan], [2.0, np.nan]])  # the second sensor in no new row: a posterior all the same
    rows, _ = make_rows(new, plain, RowSources(), RowRecipe())
    np.testing.assert_array_equal(rows, [[1, 0, 1, 0], [2, 0, 1, 0]])
    with pytest.raises(ValueError, match="column 1 of the data is never observed"):
        make_rows(new, plain, RowSources())
