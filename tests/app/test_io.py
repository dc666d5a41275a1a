import json

import numpy as np
import pytest

from invae.app.io import StagedResults, load_array, write_results


def test_a_mapped_npy_is_read_where_used_and_writes_to_it_never_reach_the_file(tmp_path, rng):
    rows = rng.standard_normal((50, 3))
    np.save(tmp_path / "x.npy", rows)
    mapped = load_array(tmp_path / "x.npy", mapped=True)
    assert isinstance(mapped, np.memmap) and mapped.flags.writeable
    mapped[0] = 0.0  # copy-on-write: this process's copy of the page only
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), rows)


def test_a_mapped_pickle_is_refused_as_one(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        load_array(tmp_path / "objects.npy", mapped=True)


def test_arrays_written_in_place_are_committed_with_the_rest(tmp_path):
    out = tmp_path / "fit"
    with StagedResults(out) as staged:
        answer = staged.array("posterior_mean", (4, 2))
        answer[:2], answer[2:] = 1.0, 2.0  # block by block, as a fit writes them
        assert not out.exists()  # nothing in place before the commit
        staged.commit({"posterior_mean": answer, "precision": np.eye(2)}, {"n": 4})
    np.testing.assert_array_equal(np.load(out / "posterior_mean.npy"), [[1, 1], [1, 1], [2, 2], [2, 2]])
    np.testing.assert_array_equal(np.load(out / "precision.npy"), np.eye(2))
    assert json.loads((out / "summary.json").read_text()) == {"n": 4}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fit"]  # no staging folder left


def test_an_error_before_the_commit_leaves_the_old_results_as_they_were(tmp_path):
    out = write_results(tmp_path / "fit", {"precision": np.eye(2)}, {"n": 1})
    with pytest.raises(RuntimeError), StagedResults(out) as staged:
        staged.array("posterior_mean", (3, 2))[:] = 5.0
        raise RuntimeError("the fit failed")
    assert sorted(path.name for path in out.iterdir()) == ["precision.npy", "summary.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fit"]
