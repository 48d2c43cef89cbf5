"""Micro-batched ranking (`RankBatcher`, `ModelRuntime.predict_many`) gives exactly each request's own scores."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import ValidationError

from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.serve import history as hist
from phoenix_recsys.serve.feed.batcher import RankBatcher
from phoenix_recsys.serve.pipeline import ModelRuntime, padded_size
from phoenix_recsys.serve.settings import ServeSettings

SEED = 13


def _requests(runtime: ModelRuntime, sizes: list[int], seed: int = SEED) -> list[RecsysBatch]:
    """One B = 1 request per size: its own user, history (0-20 events) and candidates."""
    rng = np.random.default_rng(seed)
    names = runtime.vocab.names
    out = []
    for i, n in enumerate(sizes):
        h = int(rng.integers(0, 21))
        history = hist.make_history(
            rng.integers(1, 300, h).tolist(), rng.integers(0, 40, h).tolist(),
            [{names[int(rng.integers(0, len(names)))]: 1.0} for _ in range(h)],
        )  # fmt: skip
        ctx = runtime.context(int(rng.integers(0, 40)) if i % 3 else None, history)
        out.append(hist.with_candidates(
            ctx, rng.integers(1, 10_000, n), rng.integers(0, 40, n), hash_config=runtime.hash_config,
            product_surface=rng.integers(0, 2, n), now=1_700_000_000 + i,
            created_at=1_700_000_000 - rng.integers(-100, 100_000, n), in_network=rng.random(n) < 0.3,
        ))  # fmt: skip
    return out


def test_predict_many_is_bitwise_each_alone(runtime: ModelRuntime):
    # 3 requests of the 64 bucket (rounded up to 4 in the call) and 2 of the 256 one, all sizes
    # different, so the padding inside a bucket differs between the stacked requests too.
    reqs = _requests(runtime, [1, 37, 64, 129, 200])
    for group in (reqs[:3], reqs[3:]):
        assert len({padded_size(r.num_candidates, runtime.ranker.chunk_size) for r in group}) == 1
        alone = [runtime.predict(r) for r in group]
        together = runtime.predict_many(group)
        for a, t, r in zip(alone, together, group, strict=True):
            assert t.shape == (r.num_candidates, len(runtime.vocab))
            assert t.dtype == np.float32
            np.testing.assert_array_equal(t, a)  # exactly, not to a tolerance


def test_predict_many_refuses_mixed_buckets(runtime: ModelRuntime):
    with pytest.raises(ValueError, match="one candidate bucket"):
        runtime.predict_many(_requests(runtime, [10, 100]))


def test_concurrent_requests_are_batched_and_exact(runtime: ModelRuntime):
    sizes = [5, 17, 33, 64, 2, 48, 9, 60, 100, 130, 256, 70, 3, 41, 200, 1]
    reqs = _requests(runtime, sizes, seed=SEED + 1)
    alone = [runtime.predict(r) for r in reqs]
    batcher = RankBatcher(runtime, window_s=0.2, max_requests=8)
    got: list[np.ndarray | None] = [None] * len(reqs)
    start = threading.Barrier(len(reqs))

    def call(i: int) -> None:
        start.wait()
        got[i] = batcher.predict(reqs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(reqs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        batcher.close()
    # Released together, 16 requests over two buckets fill windows: some were scored together.
    assert batcher.batches >= 1 and batcher.batched_requests >= 2
    for a, g in zip(alone, got, strict=True):
        assert g is not None
        np.testing.assert_array_equal(g, a)


def test_large_requests_and_a_closed_batcher_score_alone(runtime: ModelRuntime):
    big, small = _requests(runtime, [runtime.ranker.chunk_size + 1, 12], seed=SEED + 2)
    batcher = RankBatcher(runtime, window_s=0.01, max_requests=2)
    try:
        np.testing.assert_array_equal(batcher.predict(big), runtime.predict(big))  # over one chunk
    finally:
        batcher.close()
    np.testing.assert_array_equal(batcher.predict(small), runtime.predict(small))
    assert batcher.batches == 0


def test_service_uses_the_batcher_when_configured(service_factory):
    svc = service_factory(rank_batch_window_ms=2.0, rank_batch_max_requests=4)
    assert svc.batcher is not None and svc.predict == svc.batcher.predict
    assert svc.feed(1, k=5).items  # the feed path ranks through it
    plain = service_factory()
    assert plain.batcher is None


@pytest.mark.parametrize(("field", "value"), [("rank_batch_max_requests", 6), ("rank_batch_max_requests", 1),
                                              ("rank_batch_window_ms", -1.0), ("rank_batch_window_ms", 500.0)])
def test_bad_batching_settings_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        ServeSettings(writes_enabled=False, **{field: value})
