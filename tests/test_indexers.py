"""One suite for every vector index, each measured against the exact reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexers import ExactIndex, FaissIndex, FaissParams, VectorIndex

DIM = 32
N = 3000
KINDS = ["exact", "faiss-flat", "faiss-hnsw"]


def clustered(n: int, dim: int = DIM, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


DATA = clustered(N)
IDS = np.arange(1000, 1000 + N, dtype=np.int64)
QUERIES = clustered(40, seed=99)


def make(kind: str) -> VectorIndex:
    if kind == "exact":
        return ExactIndex(DIM)
    if kind == "faiss-flat":
        return FaissIndex(DIM, FaissParams(flat_max=10**6, exact_max=0))
    return FaissIndex(DIM, FaissParams(ef_search=128, exact_max=200), hnsw=True)


def filled(kind: str) -> Iterator[tuple[VectorIndex, ExactIndex]]:
    index = make(kind)
    reference = ExactIndex(DIM)
    for index_ in (index, reference):
        index_.add(IDS, DATA)
    yield index, reference


@pytest.fixture(params=KINDS)
def loaded(request: pytest.FixtureRequest) -> Iterator[tuple[VectorIndex, ExactIndex]]:
    """A fresh filled index per test (the test may change it)."""
    yield from filled(request.param)


@pytest.fixture(params=KINDS, scope="module")
def shared(request: pytest.FixtureRequest) -> Iterator[tuple[VectorIndex, ExactIndex]]:
    """One filled index per kind for the tests that only read."""
    yield from filled(request.param)


def recall(index: VectorIndex, reference: ExactIndex, k: int = 10, allow: Any = None) -> float:
    found = total = 0
    for q in QUERIES:
        truth, _ = reference.search(q, k, allow)
        got, scores = index.search(q, k, allow)
        assert len(got) == len(truth), "an index must return min(k, allowed) results"
        assert np.all(np.diff(scores) <= 1e-5), "scores must be descending"
        found += len(set(got.tolist()) & set(truth.tolist()))
        total += len(truth)
    return found / max(1, total)


def test_top_k_matches_the_reference(shared: tuple[VectorIndex, ExactIndex]) -> None:
    index, reference = shared
    assert index.size == N
    assert recall(index, reference) >= 0.95
    ids, scores = index.search(DATA[5], 1)
    assert ids[0] == IDS[5] and scores[0] == pytest.approx(1.0, abs=1e-4)


def test_removed_ids_never_come_back(loaded: tuple[VectorIndex, ExactIndex]) -> None:
    index, reference = loaded
    gone = IDS[::3]
    index.remove(gone)
    reference.remove(gone)
    assert index.size == N - len(gone)
    for q in [*QUERIES, *DATA[::300]]:
        ids, _ = index.search(q, 50)
        assert not set(ids.tolist()) & set(gone.tolist())
    assert recall(index, reference) >= 0.95


def test_adding_an_existing_id_replaces_its_vector(loaded: tuple[VectorIndex, ExactIndex]) -> None:
    index, _ = loaded
    target = int(IDS[10])
    new_vector = DATA[2000]
    index.add([target], new_vector.reshape(1, -1))
    assert index.size == N
    ids, _ = index.search(new_vector, 2)
    assert set(ids.tolist()) == {target, int(IDS[2000])}
    ids, _ = index.search(DATA[10], 5)
    assert target not in ids.tolist()


@pytest.mark.parametrize("share", [0.002, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("form", ["set", "array", "callable"])
def test_allow_filters_are_exact(
    shared: tuple[VectorIndex, ExactIndex], share: float, form: str
) -> None:
    index, reference = shared
    rng = np.random.default_rng(int(share * 1000))
    chosen = np.sort(rng.choice(IDS, max(1, int(share * N)), replace=False))
    allow: Any
    if form == "set":
        allow = set(chosen.tolist())
    elif form == "array":
        allow = chosen
    else:

        def allow(ids: np.ndarray) -> np.ndarray:
            return np.isin(ids, chosen)

    assert recall(index, reference, 10, allow) >= 0.99
    ids, _ = index.search(QUERIES[0], 10, allow)
    assert set(ids.tolist()) <= set(chosen.tolist())


def test_save_and_load_round_trip(loaded: tuple[VectorIndex, ExactIndex], tmp_path: Path) -> None:
    index, _ = loaded
    index.remove(IDS[:100])
    index.save(tmp_path)
    if isinstance(index, FaissIndex):
        again: VectorIndex = FaissIndex.load(tmp_path)
    else:
        again = ExactIndex.load(tmp_path)
    assert again.size == index.size
    for q in QUERIES[:10]:
        a, _ = index.search(q, 10)
        b, _ = again.search(q, 10)
        assert a.tolist() == b.tolist()


def test_faiss_rebuild_drops_tombstones_and_switches_to_hnsw() -> None:
    index = FaissIndex.build(DIM, IDS[:1000], DATA[:1000], FaissParams(flat_max=1500))
    assert not index.is_hnsw and not index.needs_rebuild
    index.add(IDS[1000:], DATA[1000:])
    assert index.needs_rebuild  # outgrew flat
    index.remove(IDS[:1500])
    fresh = index.rebuilt()
    assert fresh.size == index.size == N - 1500 and fresh.dead == 0
    reference = ExactIndex(DIM)
    reference.add(IDS[1500:], DATA[1500:])
    for q in QUERIES[:10]:
        a, _ = reference.search(q, 10)
        b, _ = fresh.search(q, 10, ef_search=200)
        assert len(set(a.tolist()) & set(b.tolist())) >= 9


def test_faiss_skips_unchanged_vectors() -> None:
    index = FaissIndex.build(DIM, IDS[:100], DATA[:100])
    index.add(IDS[:100], DATA[:100])
    assert index.positions == 100 and index.dead == 0


def test_tune_picks_the_smallest_ef_search_that_reaches_the_target() -> None:
    from memory_service.tuning import tune

    result = tune(
        IDS, DATA, FaissParams(hnsw_m=16), target=0.95, queries=40, ef_values=(4, 16, 64, 256)
    )
    recalls = [m.recall for m in result.measurements]
    assert result.chosen_ef_search is not None
    chosen = next(m for m in result.measurements if m.ef_search == result.chosen_ef_search)
    assert chosen.recall >= 0.95
    assert all(m.recall < 0.95 for m in result.measurements if m.ef_search < chosen.ef_search)
    assert recalls[-1] >= recalls[0]


def test_the_flat_limit_is_where_the_scan_stops_being_cheaper_than_the_graph() -> None:
    from memory_service.tuning import crossover

    flat_max, points = crossover(DATA, FaissParams(hnsw_m=16), sizes=(200, 400, 10**9), queries=20)
    assert [p.vectors for p in points] == [200, 400]  # sizes beyond the data are skipped
    assert all(
        p.flat_p50_ms > 0 and p.graph_p50_ms > 0 and 0 <= p.graph_recall <= 1 for p in points
    )
    # the answer follows the measurements: the largest leading size where the graph was not
    # yet twice as fast (or missed the recall target)
    expected = 0
    for p in points:
        if p.flat_p50_ms < 2 * p.graph_p50_ms or p.graph_recall < 0.99:
            expected = p.vectors
        else:
            break
    assert flat_max == expected
