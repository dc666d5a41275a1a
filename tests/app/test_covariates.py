import numpy as np
import pytest

from invae.app.covariates import CovariateCoding, design_matrix


def test_group_labels_become_indicators_and_numbers_enter_linearly():
    with pytest.warns(UserWarning, match="1.0 per parameter"):  # 4 rows, 4 parameters
        design, names = design_matrix([np.array(["b", "a", "c", "a"]), np.array([1.0, 2.0, 3.0, 5.0])])
    np.testing.assert_array_equal(design, [[1, 1, 0, 1], [1, 0, 0, 2], [1, 0, 1, 3], [1, 0, 0, 5]])
    assert names == ["intercept", "c0=b", "c0=c", "c1"]


def test_collinear_covariates_are_refused():
    with pytest.raises(ValueError, match="collinear"):
        design_matrix([np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])])


def test_a_covariate_with_few_rows_per_level_is_warned_of():
    names = np.array([f"player {i}" for i in range(40)])  # one label per row: every residual 0
    with pytest.warns(UserWarning, match="40 location parameters for 40 rows"):
        design_matrix({"name": names})
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 10)  # 10 rows per parameter: no warning
    design, _ = design_matrix({"team": groups})
    assert design.shape == (40, 4)


def test_a_coding_codes_new_rows_as_the_fits_and_refuses_what_it_has_not_seen():
    fitted = {"status": np.array(["healthy", "infected", "intermediate", "healthy"]), "depth": np.array([1.0, 2, 3, 4])}
    coding = CovariateCoding.of(fitted)
    assert coding.names == ["status=infected", "status=intermediate", "depth"]
    new = {"depth": np.array([7.0, 8.0]), "status": np.array(["intermediate", "healthy"]), "other": np.array([1, 2])}
    np.testing.assert_array_equal(coding.encode(new), [[0, 1, 7], [0, 0, 8]])  # the reference level: all zeros
    assert CovariateCoding.from_record(coding.to_record()) == coding
    with pytest.raises(ValueError, match="label.s. sick that the fit did not have"):
        coding.encode({**new, "status": np.array(["sick", "healthy"])})
    with pytest.raises(ValueError, match="no column 'depth'"):
        coding.encode({"status": new["status"]})
    with pytest.raises(ValueError, match="was numeric in the fit but holds text"):
        coding.encode({**new, "depth": np.array(["a", "b"])})


def test_a_covariate_file_with_a_gap_or_an_id_column_is_refused_or_warned_of(tmp_path):
    from invae.app.covariates import read_covariates

    (tmp_path / "gap.csv").write_text("dose,group\n0.5,a\n,b\n2.0,a\n")
    with pytest.raises(ValueError, match="covariate column dose has a missing value .row 1."):
        read_covariates(tmp_path / "gap.csv", 3)
    ids = "\n".join(f"s{i},{i % 2}" for i in range(12))
    (tmp_path / "ids.csv").write_text("sample,flag\n" + ids + "\n")
    with pytest.warns(UserWarning, match="12 location parameters for 12 rows"):
        read_covariates(tmp_path / "ids.csv", 12, ["sample"])
