"""Tests for serve.pipeline / serve.history / serve.settings: the feed as a library, no HTTP."""

from __future__ import annotations

import numpy as np
import pytest

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.examples import build_ranking_examples
from phoenix_recsys.serve import history as hist
from phoenix_recsys.serve.filters import (
    SOURCE_FRESH,
    SOURCE_IN_NETWORK,
    SOURCE_OUT_OF_NETWORK,
    SOURCE_POPULAR,
)
from phoenix_recsys.serve.pipeline import (
    FeedService,
    HistoryEvent,
    InvalidRequest,
    NewEvent,
    NewPost,
    RankCandidate,
    candidate_buckets,
    cold_start_sources,
    feed_scoring_config,
    in_network_source,
    out_of_network_source,
    padded_size,
)
from phoenix_recsys.serve.settings import ServeSettings, SettingsError, load_settings
from phoenix_recsys.serve.store import Store
from phoenix_recsys.train.inference import predict_ranker

API_KEY = "test-key-0123456789abcdef"

SOURCES = {SOURCE_IN_NETWORK, SOURCE_OUT_OF_NETWORK, SOURCE_POPULAR, SOURCE_FRESH}


def _active_user(service: FeedService) -> int:
    """A user with a history and at least one follow (in-network and retrieval both run)."""
    for u in range(40):
        if len(service.user_model_history(u)) >= 3 and service.store.followed_authors(u).size:
            return u
    raise AssertionError("the test world has no user with history and follows")


# -- seeding and history: serving sees what training saw ---------------------------------------
def test_seed_mirrors_training_engagements_and_runs_once(service, world, runtime, settings_factory):
    engaged = world.engaged()  # any binary action: the training definition
    users = world.column("user_id")
    for u in (0, 7, 23):
        stored = service.store.get_history(u, 10_000)
        assert len(stored) == int((engaged & (users == u)).sum())
        # Impressions without a binary action are "seen", never history.
        shown = set(world.column("post_id")[users == u].tolist())
        assert set(service.store.seen_posts(u).tolist()) == shown
    n_posts = service.store.num_posts()
    service.close()
    again = FeedService.open(runtime, settings=settings_factory(), data_dir=world.path)
    try:
        assert again.store.num_posts() == n_posts == world.posts.num_rows
        assert len(again.store.get_history(0, 10_000)) == int((engaged & (users == 0)).sum())  # not seeded twice
    finally:
        again.close()


def test_history_batch_equals_training_examples(service, world, runtime):
    cfg = runtime.config
    ex = build_ranking_examples(world, cfg.hash_config, history_len=cfg.history_seq_len, max_candidates=8, split="all")
    rng = np.random.default_rng(0)
    checked = 0
    for i in rng.choice(len(ex), size=min(40, len(ex)), replace=False):
        t = int(ex.candidate_timestamps[i, 0])
        h = hist.fetch_history(service.store, int(ex.user_ids[i]), cfg.history_seq_len, runtime.vocab, before=t)
        b = hist.context_batch(
            int(ex.user_ids[i]), h, hash_config=cfg.hash_config, vocab=runtime.vocab, history_len=cfg.history_seq_len
        )
        for field in ("user_hashes", "history_post_hashes", "history_author_hashes", "history_actions",
                      "history_product_surface"):  # fmt: skip
            np.testing.assert_array_equal(getattr(b, field)[0], getattr(ex.batch, field)[i], err_msg=field)
        checked += int(len(h) > 0)
        # The in-network candidate flag: the store's follows are the dataset's, except self-follows,
        # which the store refuses (in synthetic worlds author 3 is not user 3; see `seed_store`).
        valid = ex.candidate_mask[i]
        authors = world.column("author_id")[ex.candidate_event_rows[i][valid]]
        flag = np.isin(authors, service.store.followed_authors(int(ex.user_ids[i])))
        other = authors != ex.user_ids[i]
        np.testing.assert_array_equal(flag[other], ex.batch.candidate_in_network[i][valid][other].astype(bool))
    assert checked > 10  # the comparison covered real histories, not only empty ones


def test_fetch_history_skips_continuous_only_events(service, world):
    u = 5
    before = service.user_model_history(u)
    pid = int(world.column("post_id", "posts")[0])
    service.add_events([NewEvent(user_id=u, post_id=pid, actions={"dwell_time": 3.0}, timestamp=1_720_000_000)])
    after = service.user_model_history(u)
    assert len(service.store.get_history(u, 10_000)) > 0
    np.testing.assert_array_equal(after.post_ids, before.post_ids)  # dwell alone is not an engagement
    service.add_events([NewEvent(user_id=u, post_id=pid, actions={"favorite": 1}, timestamp=1_720_000_001)])
    assert service.user_model_history(u).post_ids[-1] == pid


def test_rank_equals_offline_model(service, world, runtime):
    cfg = runtime.config
    ex = build_ranking_examples(world, cfg.hash_config, history_len=cfg.history_seq_len, max_candidates=8, split="all")
    labels = world.action_matrix()
    names = runtime.vocab.names
    ev_post, ev_author = world.column("post_id"), world.column("author_id")
    ev_surface = world.column("product_surface")
    idx = [i for i in range(len(ex)) if (ex.history_event_rows[i] >= 0).sum() >= 2][:6]
    assert idx
    offline = predict_ranker(runtime.bundle.ranker, ex.take(np.array(idx)))
    for row, i in enumerate(idx):
        hrows = ex.history_event_rows[i][ex.history_event_rows[i] >= 0]
        history = [
            HistoryEvent(
                post_id=int(ev_post[r]), author_id=int(ev_author[r]), product_surface=int(ev_surface[r]),
                actions={n: float(v) for n, v in zip(names, labels[r], strict=True) if v > 0},
            )
            for r in hrows
        ]
        crows = ex.candidate_event_rows[i][ex.candidate_mask[i]]
        follows = ex.batch.candidate_in_network[i][ex.candidate_mask[i]]
        cands = [
            RankCandidate(post_id=int(ev_post[r]), product_surface=int(ev_surface[r]), in_network=bool(f))
            for r, f in zip(crows, follows, strict=True)
        ]
        res = service.rank(cands, user_id=int(ex.user_ids[i]), history=history)
        got = np.array([[c.probabilities[n] for n in names] for c in res.candidates])
        np.testing.assert_allclose(got, offline[row][ex.candidate_mask[i]], rtol=1e-5, atol=1e-6)
        assert [c.author_id for c in res.candidates] == [int(ev_author[r]) for r in crows]  # looked up in the store


def test_following_an_author_reaches_the_ranker(service):
    u = _active_user(service)
    followed = set(service.store.followed_authors(u).tolist())
    author = next(a for a in range(1, 15) if a not in followed and a != u)
    post = int(service.store.recent_posts_by_authors([author], limit_total=1, per_author_cap=1).post_ids[0])
    before = service.rank([RankCandidate(post_id=post)], user_id=u).candidates[0].probabilities
    forced = service.rank([RankCandidate(post_id=post, in_network=True)], user_id=u).candidates[0].probabilities
    service.set_relation(u, "follows", author, True)
    after = service.rank([RankCandidate(post_id=post)], user_id=u).candidates[0].probabilities
    assert after == pytest.approx(forced) and after != pytest.approx(before)


def test_rank_scores_do_not_depend_on_the_other_candidates(service):
    u = _active_user(service)
    ids = list(range(0, 120, 3))
    full = service.rank([RankCandidate(post_id=p) for p in ids], user_id=u)
    part = service.rank([RankCandidate(post_id=p) for p in ids[5:9][::-1]], user_id=u)
    by_id = {c.post_id: c.weighted_score for c in full.candidates}
    for c in part.candidates:
        assert c.weighted_score == pytest.approx(by_id[c.post_id], rel=1e-5, abs=1e-6)
    assert list(full.ranking) == sorted(range(len(ids)), key=lambda i: -full.candidates[i].weighted_score)


# -- the feed -------------------------------------------------------------------------------------
def test_feed_items_carry_their_explanation(service):
    u = _active_user(service)
    res = service.feed(u, 50)
    assert 0 < len(res.items) <= 50 and not res.cold_start
    assert res.history_length == len(service.user_model_history(u))
    followed = set(service.store.followed_authors(u).tolist())
    seen = set(service.store.seen_posts(u).tolist())
    finals = [it.final_score for it in res.items]
    assert finals == sorted(finals, reverse=True)
    assert [it.rank for it in res.items] == list(range(1, len(res.items) + 1))
    assert len({it.post_id for it in res.items}) == len(res.items)
    for it in res.items:
        assert it.source in SOURCES
        assert set(it.probabilities) == set(service.vocab.names)
        assert it.final_score == pytest.approx(it.offset_score * it.diversity_multiplier * it.oon_multiplier)
        assert it.in_network == (it.author_id in followed)
        assert it.oon_multiplier == (1.0 if it.in_network else 0.75)
        assert it.post_id not in seen and it.author_id != u
        assert (it.retrieval_score is not None) == (it.source == SOURCE_OUT_OF_NETWORK)
    assert {SOURCE_IN_NETWORK, SOURCE_OUT_OF_NETWORK} <= set(res.sources)
    assert sum(res.filtered.values()) == sum(res.sources.values()) - res.ranked
    assert set(res.timings_ms) >= {"history", "sources", "filter", "rank", "score", "total"}


def test_author_diversity_decays_repeated_authors(service):
    res = service.feed(_active_user(service), 200)
    count: dict[int, int] = {}
    # Diversity ranks by the offset score; the k-th post of an author there gets 0.75 * 0.5**k + 0.25.
    for it in sorted(res.items, key=lambda it: -it.offset_score):
        k = count.get(it.author_id, 0)
        assert it.diversity_multiplier == pytest.approx(0.75 * 0.5**k + 0.25)
        count[it.author_id] = k + 1
    assert max(count.values()) > 1  # the check saw repeated authors


def test_unknown_user_gets_a_cold_start_feed(service):
    res = service.feed(987_654_321, 20)
    assert res.cold_start and res.history_length == 0
    assert len(res.items) == 20
    assert {it.source for it in res.items} <= {SOURCE_POPULAR, SOURCE_FRESH}
    assert set(res.sources) == {SOURCE_POPULAR, SOURCE_FRESH}
    popular = service.store.popular_posts(5).post_ids.tolist()
    assert set(popular) <= {p for p in service.store.fresh_posts(10_000).post_ids.tolist()}


def test_engagement_changes_the_next_feed(service):
    u = _active_user(service)
    first = service.feed(u, 10)
    top = first.items[0]
    service.add_events([NewEvent(user_id=u, post_id=top.post_id, actions={"favorite": 1.0, "dwell_time": 4.0})])
    second = service.feed(u, 10)
    assert second.history_length == min(first.history_length + 1, service.runtime.config.history_seq_len)
    assert top.post_id not in {it.post_id for it in second.items}
    assert service.user_model_history(u).post_ids[-1] == top.post_id


def test_impression_event_marks_seen_without_history(service):
    u = _active_user(service)
    top = service.feed(u, 5).items[0]
    n_before = len(service.store.get_history(u, 10_000))
    res = service.add_events([NewEvent(user_id=u, post_id=top.post_id, actions={})])
    assert (res.engagements, res.impressions) == (0, 1)
    assert len(service.store.get_history(u, 10_000)) == n_before
    assert top.post_id not in {it.post_id for it in service.feed(u, 50).items}


def test_block_and_mute_remove_an_author_at_once(service):
    u = _active_user(service)
    items = service.feed(u, 200).items
    a = items[0].author_id
    assert service.set_relation(u, "blocks", a, True)
    assert a not in {it.author_id for it in service.feed(u, 200).items}
    assert service.set_relation(u, "blocks", a, False)
    b = items[0].author_id
    service.set_relation(u, "mutes", b, True)
    assert b not in {it.author_id for it in service.feed(u, 200).items}
    with pytest.raises(InvalidRequest) as e:
        service.set_relation(u, "follows", u, True)
    assert e.value.loc == ("author_id",)


def test_new_post_is_retrievable_and_reaches_followers(service_factory):
    # Only the in-network source, so every candidate fits one page and the check cannot miss it.
    service = service_factory(cold_start_popular=0, cold_start_fresh=0)
    u = _active_user(service)
    author = int(service.store.followed_authors(u)[0])
    n = len(service.index)
    service.add_posts([NewPost(post_id=50_000, author_id=author, text="hello")])
    assert 50_000 in service.index and len(service.index) == n + 1
    hits = service.retrieve(n + 1, user_id=u, exclude_seen=False)
    assert 50_000 in {h.post_id for h in hits.items}
    follower = 424_242  # a new user following only this author
    service.set_relation(follower, "follows", author, True)
    res = service.feed(follower, 200)
    assert res.cold_start and res.ranked <= 200
    item = next(it for it in res.items if it.post_id == 50_000)
    assert item.source == SOURCE_IN_NETWORK and item.in_network and item.age_s == 0


def test_pagination_excludes_earlier_pages_posts(service):
    u = _active_user(service)
    page1 = {it.post_id for it in service.feed(u, 10).items}
    res2 = service.feed(u, 10, exclude=sorted(page1))
    page2 = {it.post_id for it in res2.items}
    assert len(page1) == 10 and len(page2) == 10 and not page1 & page2
    assert res2.filtered["served_in_session"] >= 1
    assert page1 == {it.post_id for it in service.feed(u, 10).items}  # nothing was recorded


def test_max_age_uses_the_data_clock(service_factory):
    svc = service_factory(max_age_s=5 * 86400)
    latest = svc.store.latest_timestamp()
    assert svc.now() == latest  # the data clock, not the wall clock (the world is from 2024)
    res = svc.feed(987_654_321, 200)
    assert res.items and all(it.age_s <= 5 * 86400 for it in res.items)
    assert res.filtered["too_old"] > 0


# -- writes refuse bad input and write nothing -------------------------------------------------
def test_bad_events_write_nothing(service):
    u = _active_user(service)
    n = len(service.store.get_history(u, 10_000))
    good = NewEvent(user_id=u, post_id=1, actions={"favorite": 1})
    with pytest.raises(InvalidRequest) as e:
        service.add_events([good, NewEvent(user_id=u, post_id=999_999, actions={"favorite": 1})])
    assert e.value.loc == ("events", 1, "post_id") and e.value.kind == "unknown_post"
    with pytest.raises(InvalidRequest) as e:
        service.add_events([good, NewEvent(user_id=u, post_id=2, actions={"favourite": 1})])
    assert e.value.loc == ("events", 1, "actions", "favourite")
    with pytest.raises(InvalidRequest) as e:
        service.add_events([good, NewEvent(user_id=u, post_id=2, actions={"favorite": 1}, product_surface=99)])
    assert e.value.loc == ("events", 1, "product_surface")
    with pytest.raises(InvalidRequest) as e:  # a far-future time would move the data clock for good
        service.add_events([good, NewEvent(user_id=u, post_id=2, actions={"favorite": 1}, timestamp=10**11)])
    assert e.value.loc == ("events", 1, "timestamp")
    assert len(service.store.get_history(u, 10_000)) == n


def test_limits_name_the_limit(service):
    with pytest.raises(InvalidRequest) as e:
        service.feed(1, service.settings.max_k + 1)
    assert e.value.kind == "limit_exceeded" and e.value.ctx == {"limit": 200} and "200" in e.value.msg
    too_many = [RankCandidate(post_id=1)] * (service.settings.max_rank_candidates + 1)
    with pytest.raises(InvalidRequest) as e:
        service.rank(too_many, user_id=1)
    assert e.value.loc == ("candidates",) and e.value.ctx == {"limit": 5000}
    with pytest.raises(InvalidRequest) as e:
        service.rank([RankCandidate(post_id=1), RankCandidate(post_id=777_777)], user_id=1)
    assert e.value.loc == ("candidates", 1, "author_id")


def test_duplicate_posts_in_one_request_are_refused(service):
    n = service.store.num_posts()
    with pytest.raises(InvalidRequest) as e:
        service.add_posts([NewPost(post_id=60_000, author_id=1), NewPost(post_id=60_000, author_id=2)])
    assert e.value.loc == ("posts", 1, "post_id")
    assert service.store.num_posts() == n and 60_000 not in service.index


# -- stages ---------------------------------------------------------------------------------------
def test_source_stages(service):
    store = service.store
    u = _active_user(service)
    followed = store.followed_authors(u)
    inn = in_network_source(store, followed, limit=1000, per_author_cap=2)
    assert set(inn.source) == {SOURCE_IN_NETWORK} and set(inn.author_ids.tolist()) <= set(followed.tolist())
    assert np.max(np.unique(inn.author_ids, return_counts=True)[1]) <= 2
    emb = service.runtime.user_embedding(service.runtime.context(u, service.user_model_history(u), for_retrieval=True))
    exclude = np.arange(0, 300, 2)
    oon = out_of_network_source(service.index, emb, limit=50, exclude=exclude)
    assert len(oon) == 50 and not np.isin(oon.post_ids, exclude).any()
    assert np.all(np.diff(oon.retrieval_score) <= 1e-6)  # best first
    cold = cold_start_sources(store, popular=7, fresh=5, popular_since=None)
    assert list(cold.source) == [SOURCE_POPULAR] * 7 + [SOURCE_FRESH] * 5


def test_candidate_buckets_bound_the_compiled_shapes():
    assert candidate_buckets(1024) == (64, 128, 256, 512, 1024)
    # Over one chunk: whole chunks, then the rest padded to its own bucket (not to a whole chunk).
    assert [padded_size(n, 1024) for n in (1, 64, 65, 300, 1024, 1025, 1100, 1463, 2048, 5000)] == [
        64, 64, 128, 512, 1024, 1088, 1152, 1536, 2048, 5120]
    assert candidate_buckets(100) == (64, 100)


def test_serving_probabilities_match_the_model_definition():
    import warnings

    import jax.numpy as jnp

    from phoenix_recsys.actions import PHOENIX_ACTIONS
    from phoenix_recsys.model import probabilities_from_logits
    from phoenix_recsys.serve.runtime import _probabilities

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, len(PHOENIX_ACTIONS))) * 30).astype(np.float32)
    x[:3] = [[1e4], [-1e4], [0.0]]  # saturation both ways, and the branch point
    binary = np.array(PHOENIX_ACTIONS.binary_mask(), bool)
    assert not binary.all()  # the vocabulary has a continuous action, so both functions are exercised
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings on the request path
        got = _probabilities(x, binary)
    want = np.asarray(probabilities_from_logits(jnp.asarray(x), PHOENIX_ACTIONS))
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_scoring_config_covers_any_vocabulary():
    vocab = ActionVocabulary.binary(["like", "click", "hide"], negative=["hide"])
    cfg = feed_scoring_config(vocab)
    assert dict(cfg.weights) == {"like": 1.0, "click": 0.4, "hide": -1.0}
    assert feed_scoring_config(vocab, {"weights": {"like": 3.0}, "out_of_network_factor": 0.5}).weights["like"] == 3.0
    with pytest.raises(ValueError, match="unknown action"):
        feed_scoring_config(vocab, {"weights": {"reply": 1.0}})


def test_index_is_persisted_and_rebuilt_only_on_change(runtime, world, settings_factory):
    s = settings_factory()
    svc = FeedService.open(runtime, settings=s, data_dir=world.path)
    assert svc.index_info.source == "built"
    svc.close()
    svc = FeedService.open(runtime, settings=s, data_dir=world.path)
    assert svc.index_info.source == "loaded" and len(svc.index) == 300
    svc.add_posts([NewPost(post_id=70_000, author_id=3)])
    svc.close()  # saves the grown index under the new corpus fingerprint
    svc = FeedService.open(runtime, settings=s)
    assert svc.index_info.source == "loaded" and 70_000 in svc.index
    svc.close()
    with Store.open(s.store_path) as st:  # posts changed behind the service's back
        st.add_posts([70_001], author_ids=[4], created_at=[0])
    svc = FeedService.open(runtime, settings=s)  # the snapshot plus that one change, not a rebuild
    assert svc.index_info.source == "loaded" and 70_001 in svc.index
    assert svc.index_info.caught_up == 1 and svc.index_info.embedded == 1
    svc.close()


# -- settings -------------------------------------------------------------------------------------
def test_settings_refuse_writes_without_a_key():
    with pytest.raises(SettingsError, match="PHOENIX_API_KEY"):
        load_settings(env={})
    assert load_settings(env={}, writes_enabled=False).api_key is None
    assert load_settings(env={}, insecure_dev=True).writes_need_key is False
    with pytest.raises(SettingsError, match="at least 16"):
        load_settings(env={"PHOENIX_API_KEY": "short"})


def test_settings_from_env_and_file(tmp_path):
    f = tmp_path / "s.json"
    f.write_text('{"max_k": 50, "port": 9000}')
    s = load_settings(
        env={"PHOENIX_API_KEY": API_KEY, "PHOENIX_MAX_K": "30", "PHOENIX_MAX_AGE_S": "none",
             "PHOENIX_DISABLED_FILTERS": '["own_post"]', "PHOENIX_CLOCK": "wall"},
        config_file=f, port=9100,
    )  # fmt: skip
    assert (s.max_k, s.port, s.max_age_s, s.clock.value) == (30, 9100, None, "wall")
    assert s.filter_config().disabled == frozenset({"own_post"})
    assert s.host == "127.0.0.1"  # loopback unless asked
    assert "test-key" not in repr(s) and s.public_dict()["api_key"] == "***"
    with pytest.raises(SettingsError, match="PHOENIX_MAX_K"):
        load_settings(env={"PHOENIX_API_KEY": API_KEY, "PHOENIX_MAX_K": "0"})
    with pytest.raises(SettingsError, match="unknown filter"):
        load_settings(env={"PHOENIX_API_KEY": API_KEY, "PHOENIX_DISABLED_FILTERS": '["nope"]'})
    assert ServeSettings(writes_enabled=False).max_rank_candidates == 5000


def test_settings_precedence_flag_over_env_over_file(tmp_path):
    """pydantic-settings sources keep the order: explicit flag > PHOENIX_* environment > JSON file."""
    f = tmp_path / "s.json"
    f.write_text('{"max_k": 50, "port": 9000, "chunk_size": 64}')
    env = {"PHOENIX_MAX_K": "30", "PHOENIX_PORT": "9001", "PHOENIX_DEMO_DIR": "unrelated"}
    s = load_settings(env=env, config_file=f, writes_enabled=False, port=9100)
    assert (s.port, s.max_k, s.chunk_size, s.max_retrieve_k) == (9100, 30, 64, 1000)  # flag, env, file, default
    f.write_text('{"max_kk": 5}')
    with pytest.raises(SettingsError, match="max_kk"):  # unknown file keys are refused by name
        load_settings(env={}, config_file=f, writes_enabled=False)
    with pytest.raises(SettingsError, match="PHOENIX_SCORING"):
        load_settings(env={"PHOENIX_SCORING": "{not json"}, writes_enabled=False)
    assert ServeSettings(writes_enabled=False).max_k == 200  # direct construction ignores the environment


def test_sequential_bundle_serves_with_its_training_rules(tmp_path, world, settings_factory):
    """A bundle whose retriever is causal with last-position pooling and whose ranker was trained on a
    narrower engagement rule: serving histories follow the recorded rule, and the served user vector is
    exactly the newest position the every-position objective trained."""
    from flax import nnx

    from phoenix_recsys.model import PhoenixModel, PhoenixModelConfig, PhoenixRetrievalModel
    from phoenix_recsys.serve.pipeline import ModelRuntime
    from phoenix_recsys.train.bundle import save_model

    cfg = PhoenixModelConfig.tiny(actions=world.actions, in_network_feature=True)
    seq = cfg.replace(history_attention="causal", user_pooling="last")
    info = {"name": world.name, "content_hash": world.manifest.get("content_sha256")}
    save_model(tmp_path / "b", "ranker", PhoenixModel(cfg, rngs=nnx.Rngs(0)), dataset=info,
               train_config={"engagement_actions": ["favorite"]})
    retriever = PhoenixRetrievalModel(seq, rngs=nnx.Rngs(1))
    save_model(tmp_path / "b", "retrieval", retriever, dataset=info, train_config={"retrieval_objective": "every_position"})
    runtime = ModelRuntime.load(tmp_path / "b")
    service = FeedService.open(runtime, settings=settings_factory(), data_dir=world.path)
    try:
        u = next(u for u in range(40) if len(service.user_model_history(u)) >= 2)
        h = service.user_model_history(u)
        assert all(a.get("favorite", 0) > 0 for a in h.actions)  # only favorites enter the history
        assert any(not a.get("favorite") for a in service.store.get_history(u, 10_000).actions)  # left out
        ctx = runtime.context(u, h, for_retrieval=True)
        reps, _ = retriever.user_sequence_representations(ctx)
        n = min(len(h), seq.history_seq_len)
        np.testing.assert_allclose(runtime.user_embedding(ctx), np.asarray(reps)[0, n], atol=1e-5)
        assert len(service.retrieve(5, user_id=u).items) == 5
    finally:
        service.close()


def test_pure_id_bundle_is_refused_for_serving(runtime):
    """A model trained on pure ids would get full-feature inputs from the feed and rank wrongly, silently."""
    import copy
    import dataclasses

    from phoenix_recsys.serve.runtime import ModelRuntime

    meta = copy.deepcopy(runtime.bundle.meta)
    entry = meta["models"]["retrieval"]
    entry["train_config"] = {**(entry.get("train_config") or {}), "input_mode": "pure_id"}
    with pytest.raises(ValueError, match=r"retrieval was trained with input_mode='pure_id'"):
        ModelRuntime(dataclasses.replace(runtime.bundle, meta=meta))


def test_the_feed_service_runs_unchanged_on_postgres(service_factory, pg_url):
    # Same seed data, same calls: the pipeline never asks which backend it has.
    svc = service_factory(store_path=pg_url)
    assert svc.store.backend == "postgres"
    u = _active_user(svc)
    first = svc.feed(u, 10)
    assert len(first.items) == 10
    top = first.items[0]
    svc.add_events([NewEvent(user_id=u, post_id=top.post_id, actions={"favorite": 1.0, "dwell_time": 4.0})])
    second = svc.feed(u, 10)
    assert top.post_id not in {it.post_id for it in second.items}
    assert svc.user_model_history(u).post_ids[-1] == top.post_id
