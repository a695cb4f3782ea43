"""Probes that arrive together are answered together, and exactly as one at a time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexers.faiss_index import FaissIndex, FaissParams
from memory_service.search.batching import ProbeBatcher
from tests.helpers import unit_vectors


def flat_with_holes(n: int, seed: int) -> FaissIndex:
    index = FaissIndex(384, FaissParams(flat_max=10**6))
    index.add(np.arange(100, 100 + n), unit_vectors(n, seed=seed))
    index.remove(np.arange(100, 100 + n, 7))  # tombstones a scan must skip
    return index


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), queries=st.integers(1, 12), k=st.integers(1, 30))
def test_a_flat_batch_answers_what_each_query_alone_answers(
    seed: int, queries: int, k: int
) -> None:
    index = flat_with_holes(500, seed)
    q = unit_vectors(queries, seed=seed + 1)
    for i, (ids, scores) in enumerate(index.search_many(q, k)):
        alone_ids, alone_scores = index.search(q[i], k)
        assert ids.tolist() == alone_ids.tolist()
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-5, atol=1e-6)
        assert not set(ids.tolist()) & set(range(100, 600, 7))


def test_a_graph_batch_answers_what_each_query_alone_answers() -> None:
    index = FaissIndex(384, FaissParams(flat_max=100), hnsw=True)
    index.add(np.arange(2000), unit_vectors(2000, seed=3))
    index.remove(np.arange(0, 2000, 5))
    q = unit_vectors(8, seed=4)
    for i, (ids, _) in enumerate(index.search_many(q, 10, ef_search=64)):
        alone_ids, _ = index.search(q[i], 10, ef_search=64)
        assert ids.tolist() == alone_ids.tolist()
        assert not {x for x in ids.tolist() if x % 5 == 0}


async def test_concurrent_probes_share_calls_and_each_gets_its_own_answer() -> None:
    index = flat_with_holes(3000, seed=5)
    batcher = ProbeBatcher()
    q = unit_vectors(40, seed=6)
    found = await asyncio.gather(
        *(batcher.search(index, q[i], 3 + i % 5, ef_search=64) for i in range(40))
    )
    for i, (ids, _) in enumerate(found):
        expected, _ = index.search(q[i], 3 + i % 5)
        assert ids.tolist() == expected.tolist()
    assert batcher.probes == 40
    assert batcher.batches < 40  # the ones that arrived while a batch ran went together
    assert not batcher.busy(index)


async def test_a_failing_batch_fails_its_probes_and_the_next_batch_runs() -> None:
    index = flat_with_holes(300, seed=7)
    batcher = ProbeBatcher()
    wrong = np.zeros(17, dtype=np.float32)  # not the index's dimension
    results = await asyncio.gather(
        batcher.search(index, wrong, 5, ef_search=64), return_exceptions=True
    )
    assert isinstance(results[0], Exception)
    ids, _ = await batcher.search(index, unit_vectors(1, seed=8)[0], 5, ef_search=64)
    assert len(ids) == 5


async def test_a_cancelled_probe_leaves_the_others_answered() -> None:
    index = flat_with_holes(3000, seed=9)
    batcher = ProbeBatcher()
    q = unit_vectors(6, seed=10)
    tasks = [asyncio.create_task(batcher.search(index, q[i], 5, ef_search=64)) for i in range(6)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert all(len(d[0]) == 5 for i, d in enumerate(done) if i != 2)  # type: ignore[index]


@pytest.mark.parametrize("n", [0, 3])
def test_a_batch_over_a_tiny_or_empty_index(n: int) -> None:
    index = FaissIndex(384)
    if n:
        index.add(np.arange(n), unit_vectors(n, seed=11))
    found = index.search_many(unit_vectors(4, seed=12), 5)
    assert [len(ids) for ids, _ in found] == [n] * 4
