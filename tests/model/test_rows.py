import numpy as np
import pytest
import torch

import invae.model.rows as rows_module
from invae.model.rows import RowMoments, row_blocks
from invae.validation import check_data


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 7 rows for rows 3 entries wide."""
    monkeypatch.setattr(rows_module, "_BLOCK_ENTRIES", 21)


def test_row_blocks_of_a_memory_map_are_copies_of_consecutive_slices(tmp_path, rng, small_blocks):
    rows = rng.standard_normal((30, 3))
    np.save(tmp_path / "rows.npy", rows)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    blocks = list(row_blocks(mapped, dtype=torch.float32))
    assert [block for block, _ in blocks] == [slice(start, start + 7) for start in range(0, 30, 7)]
    assert all(part.dtype == torch.float32 and part.is_contiguous() for _, part in blocks)
    np.testing.assert_array_equal(torch.cat([part for _, part in blocks]).numpy(), rows.astype(np.float32))
    blocks[0][1].zero_()  # a copy: the file's rows do not change
    np.testing.assert_array_equal(np.asarray(mapped[:7]), rows[:7])


def test_row_blocks_of_a_tensor_do_not_share_its_memory(small_blocks):
    rows = torch.arange(30.0, dtype=torch.float64).reshape(10, 3)
    _, first = next(row_blocks(rows))
    first.zero_()
    assert rows[0, 1] == 1.0


def test_check_data_keeps_a_memory_map_and_finds_the_first_bad_entry_in_a_later_block(tmp_path, small_blocks):
    rows = np.ones((30, 3))
    rows[17, 2], rows[25, 0] = np.nan, np.inf
    np.save(tmp_path / "rows.npy", rows)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="holds 2 NaN/inf value.*first at row 17, column 2"):
        check_data(mapped)
    with pytest.raises(ValueError, match="holds 1 inf value.*first at row 25, column 0"):
        check_data(mapped, allow_missing=True)
    rows[17, 2], rows[25, 0] = 3.0, -4.0
    np.save(tmp_path / "clean.npy", rows)
    clean = np.load(tmp_path / "clean.npy", mmap_mode="r")
    checked = check_data(clean)
    assert np.shares_memory(checked, clean)  # not read whole into a copy
    with pytest.raises(ValueError, match="values up to 1e\\+30"):
        check_data(np.where(np.arange(30)[:, None] == 29, 1e30, rows))


def _rows(rng, n=3000, r=5, offset=1e3):
    """Correlated rows far from 0 (offset): raw sums of squares would cancel there."""
    return rng.standard_normal((n, r)) @ rng.standard_normal((r, r)) + offset


def test_moments_read_block_by_block_equal_those_of_all_rows_at_once(rng, tmp_path, monkeypatch):
    rows = _rows(rng)
    np.save(tmp_path / "rows.npy", rows)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    whole = RowMoments.of(rows)
    monkeypatch.setattr(rows_module, "_BLOCK_ENTRIES", 347 * 5)  # blocks of 347 rows: 9, the last one short
    blocks = RowMoments.of(mapped)
    diagonal = RowMoments.of(mapped, read=lambda block: (block - 1e3).square(), diagonal=True)  # as log1p
    assert blocks.count == whole.count == len(rows)
    # float64 round-off: the merge is exact in exact arithmetic; entries are O(1), means O(1e3)
    np.testing.assert_allclose(blocks.mean.numpy(), rows.mean(0), rtol=1e-14)
    np.testing.assert_allclose(blocks.covariance.numpy(), np.cov(rows.T, bias=True), atol=1e-11)
    np.testing.assert_allclose(blocks.scatter.numpy(), whole.scatter.numpy(), atol=1e-8)
    read = (rows - 1e3) ** 2
    np.testing.assert_allclose(diagonal.mean.numpy(), read.mean(0), rtol=1e-13)
    np.testing.assert_allclose(diagonal.covariance.numpy(), read.var(0), rtol=1e-10)


def test_merging_two_sets_of_rows_gives_the_moments_of_their_union(rng):
    first, second = _rows(rng, n=100), _rows(rng, n=2500, offset=-50.0)
    merged = RowMoments.of(first).merge(RowMoments.of(second))
    union = np.vstack([first, second])
    np.testing.assert_allclose(merged.mean.numpy(), union.mean(0), rtol=1e-13)
    np.testing.assert_allclose(merged.covariance.numpy(), np.cov(union.T, bias=True), rtol=1e-10, atol=1e-10)
