"""Series from a long CSV (invae.app.long_series), and ``invae fit``/``predict`` reading one."""

import json

import numpy as np
import pytest

from invae.app.cli import main
from invae.app.long_series import read_long_series


def _write(path, text):
    path.write_text(text)
    return path


def test_the_series_share_the_sorted_union_of_their_times_with_nan_where_unseen(tmp_path):
    long = read_long_series(_write(tmp_path / "s.csv", "series,time,a,b\n"
                                   "north,2,1.5,\nnorth,0,1,2\nsouth,1,3,4\nsouth,0,5,NA\nnorth,1,6,7\n"))
    assert long.series == ["north", "south"] and long.measurements == ["a", "b"]  # order of first line
    np.testing.assert_array_equal(long.times, [0.0, 1.0, 2.0])
    expected = np.array([[[1, 2], [6, 7], [1.5, np.nan]],
                         [[5, np.nan], [3, 4], [np.nan, np.nan]]])
    np.testing.assert_array_equal(long.x, expected)


@pytest.mark.parametrize("text, message", [
    ("id,time,a\nx,0,1\n", "its header must be series,time,<measurement>"),
    ("series,time\nx,0\n", "its header must be series,time,<measurement>"),
    ("series,time,a\n", "has a header and no lines"),
    ("series,time,a\nx,0,1\nx,1\n", "line 3 of the data (--data) has 2 fields, its header 3"),
    ("series,time,a\nx,zero,1\n", "line 2 of the data (--data): the time 'zero' is not a finite number"),
    ("series,time,a\nx,inf,1\n", "the time 'inf' is not a finite number"),
    ("series,time,a\nx,0,one\n", "the measurement 'one' is not a number"),
    ("series,time,a\nx,0,1\ny,0,2\nx,0.0,3\n", "two lines for series 'x' at time 0"),
])
def test_bad_long_csvs_are_refused_naming_the_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_long_series(_write(tmp_path / "bad.csv", text))


@pytest.fixture
def wide_and_long(tmp_path):
    """The same 6 series of 8 times as an array (NaN where a line is left out) and a long CSV."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((6, 8, 1)), axis=1) + 0.3 * rng.standard_normal((6, 8, 1))
    times = np.arange(8) * 0.5
    kept = rng.random((6, 8)) > 0.2
    kept[:, 0] = True  # every time is some series' (the union of times is the array's)
    lines = [f"unit{i},{times[t]},{float(x[i, t, 0])!r}" for t in range(8) for i in range(6) if kept[i, t]]
    x[~kept] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "times.npy", times)
    _write(tmp_path / "x.csv", "series,time,level\n" + "\n".join(lines) + "\n")
    return tmp_path


def test_fit_and_predict_read_a_long_csv_as_the_array_it_holds(wide_and_long):
    folder = wide_and_long
    common = ["--prior", "ou", "--method", "kalman", "--noise-std", "0.3", "--quiet"]
    assert main(["fit", "--data", str(folder / "x.npy"), "--times", str(folder / "times.npy"), *common,
                 "--out", str(folder / "wide")]) == 0
    assert main(["fit", "--data", str(folder / "x.csv"), *common, "--out", str(folder / "long"),
                 "--save", str(folder / "long.pt")]) == 0
    wide, long = (json.loads((folder / name / "summary.json").read_text()) for name in ("wide", "long"))
    assert long["parameters"] == wide["parameters"] and long["times"] == wide["times"]
    assert long["series"] == [f"unit{i}" for i in range(6)] and "series" not in wide
    np.testing.assert_array_equal(np.load(folder / "long" / "posterior_mean.npy"),
                                  np.load(folder / "wide" / "posterior_mean.npy"))
    assert main(["predict", "--model", str(folder / "long.pt"), "--data", str(folder / "x.csv"),
                 "--out", str(folder / "pred")]) == 0
    np.testing.assert_array_equal(np.load(folder / "pred" / "posterior_mean.npy"),
                                  np.load(folder / "long" / "posterior_mean.npy"))


def test_times_with_a_long_csv_and_a_csv_at_other_times_for_predict_are_refused(wide_and_long, capsys):
    folder = wide_and_long
    common = ["--prior", "ou", "--method", "kalman", "--noise-std", "0.3", "--quiet"]
    assert main(["fit", "--data", str(folder / "x.csv"), "--times", str(folder / "times.npy"), *common,
                 "--out", str(folder / "never")]) == 2
    assert "a long CSV (--data) carries its own times" in capsys.readouterr().err
    assert not (folder / "never").exists()
    assert main(["fit", "--data", str(folder / "x.csv"), *common, "--out", str(folder / "fit"),
                 "--save", str(folder / "fit.pt")]) == 0
    shifted = (folder / "x.csv").read_text().replace(",0.0,", ",0.25,")
    _write(folder / "shifted.csv", shifted)
    assert main(["predict", "--model", str(folder / "fit.pt"), "--data", str(folder / "shifted.csv"),
                 "--out", str(folder / "pred")]) == 2
    err = capsys.readouterr().err
    assert "the long CSV's times (--data) are not the model's" in err and err.count("\n") == 1
    assert not (folder / "pred").exists()


def test_times_per_series_put_the_series_on_the_union_of_their_times(tmp_path):
    rng = np.random.default_rng(1)
    grid = np.arange(10) * 0.5
    own = np.sort(np.stack([rng.choice(10, 6, replace=False) for _ in range(5)]), axis=1)  # (n, T) grid indices
    x = rng.standard_normal((5, 6, 1)).cumsum(axis=1)
    union = np.unique(own)
    shared = np.full((5, len(union), 1), np.nan)
    shared[np.arange(5)[:, None], np.searchsorted(union, own)] = x
    np.save(tmp_path / "own.npy", x)
    np.save(tmp_path / "own_times.npy", grid[own])
    np.save(tmp_path / "shared.npy", shared)
    np.save(tmp_path / "union.npy", grid[union])
    common = ["--prior", "ou", "--method", "kalman", "--noise-std", "0.3", "--quiet"]
    for data, times in (("own", "own_times"), ("shared", "union")):
        assert main(["fit", "--data", str(tmp_path / f"{data}.npy"), "--times", str(tmp_path / f"{times}.npy"),
                     *common, "--out", str(tmp_path / data)]) == 0
    fits = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("own", "shared")]
    assert fits[0]["parameters"] == fits[1]["parameters"] and fits[0]["times"] == list(grid[union])
    np.testing.assert_array_equal(np.load(tmp_path / "own" / "posterior_mean.npy"),
                                  np.load(tmp_path / "shared" / "posterior_mean.npy"))


@pytest.mark.parametrize("times, message", [
    (np.arange(12.0).reshape(3, 4), "--times per series must be (n, T) = (2, 4) for the data, got (3, 4)"),
    (np.array([[0.0, 1, 2, 3], [0, 2, 1, 3]]), "row 1 of --times must be strictly increasing: times[2] = 1 follows"),
])
def test_bad_times_per_series_are_refused(tmp_path, capsys, times, message):
    np.save(tmp_path / "x.npy", np.ones((2, 4, 1)))
    np.save(tmp_path / "t.npy", times)
    assert main(["fit", "--data", str(tmp_path / "x.npy"), "--times", str(tmp_path / "t.npy"), "--prior", "ou",
                 "--method", "kalman", "--noise-std", "0.3", "--quiet", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "never").exists()
