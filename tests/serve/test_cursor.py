"""Signed feed cursors (issue 14): pagination without writes on the read path.

Page 2 skips page 1's posts through the cursor alone; a tampered, expired, foreign-user, malformed or
foreign-secret cursor is a 422 naming `cursor`; the old `session_id` is refused; a feed request with
a cursor changes no row of any store table; two apps with one secret accept each other's cursors.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from phoenix_recsys.serve.api import create_app
from phoenix_recsys.serve.api.cursor import MAX_CURSOR_CHARS, CursorCodec, CursorError

SECRET = "cursor-secret-0123456789abcdef"


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _codec(secret: bytes = b"k" * 32, **kw) -> CursorCodec:
    return CursorCodec(secret, clock=kw.pop("clock", _Clock(1_000.0)), **kw)


# -- the codec -------------------------------------------------------------------------------------
def test_a_cursor_round_trips_its_user_times_and_served_ids():
    c = _codec(ttl_s=60)
    got = c.verify(c.issue(7, [5, 3, 5, 9]), 7)
    assert (got.user_id, got.issued_at, got.expires_at) == (7, 1000, 1060)
    assert got.served.dtype == np.int64 and got.served.tolist() == [5, 3, 9]  # order kept, repeat dropped


def test_a_cursor_keeps_the_newest_max_ids_and_stays_small():
    c = _codec(max_ids=1000)
    ids = np.random.default_rng(0).integers(0, 2**40, 3000).tolist()
    tok = c.issue(1, ids)
    assert c.verify(tok, 1).served.tolist() == list(dict.fromkeys(ids))[-1000:]
    # 1000 random 40-bit ids: ~9 KB, far under the schema's bound; so is the largest configurable cursor.
    assert len(tok) < 20_000 < MAX_CURSOR_CHARS
    assert len(_codec(max_ids=5000).issue(1, np.arange(2**40, 2**40 + 5000))) < MAX_CURSOR_CHARS


def test_tampered_expired_foreign_and_malformed_cursors_are_refused():
    clock = _Clock(1_000.0)
    c = _codec(clock=clock, ttl_s=60)
    tok = c.issue(7, [1, 2, 3])
    head, payload, tag = tok.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    cases = {
        "signature": [f"{head}.{flipped}.{tag}", f"{head}.{payload}.{tag[:-1]}x", f"{head}.{payload}.{tag}A"],
        "another user": [],
        "malformed": ["", "garbage", "v2." + payload + "." + tag, f"{head}.{payload}", f"{head}..{tag}", "v1.é.é"],
    }
    for want, tokens in cases.items():
        for t in tokens:
            with pytest.raises(CursorError, match=want):
                c.verify(t, 7)
    with pytest.raises(CursorError, match="another user"):
        c.verify(tok, 8)
    with pytest.raises(CursorError, match="signature"):  # another server's secret
        _codec(b"z" * 32).verify(tok, 7)
    assert _codec(b"k" * 32).verify(tok, 7).served.tolist() == [1, 2, 3]  # the same secret elsewhere: accepted
    clock.t = 1_059.0
    assert c.verify(tok, 7).user_id == 7
    clock.t = 1_060.0
    with pytest.raises(CursorError, match="expired"):
        c.verify(tok, 7)


def test_bad_codec_settings_are_refused():
    with pytest.raises(ValueError, match="secret"):
        CursorCodec(b"short")
    with pytest.raises(ValueError, match="max_ids"):
        CursorCodec(b"k" * 32, max_ids=0)
    with pytest.raises(ValueError, match="ttl_s"):
        CursorCodec(b"k" * 32, ttl_s=0)


# -- the API ---------------------------------------------------------------------------------------
@pytest.fixture
def svc(service_factory):
    return service_factory(cursor_secret=SECRET)


def _viewer(svc) -> int:
    return next(x for x in range(40) if len(svc.user_model_history(x)) >= 3)


def _page(c: TestClient, user: int, cursor: str | None = None, k: int = 10) -> dict:
    body = {"user_id": user, "k": k} | ({} if cursor is None else {"cursor": cursor})
    r = c.post("/v1/feed", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(page: dict) -> set[int]:
    return {int(i["post_id"]) for i in page["items"]}


def _row_counts(svc) -> dict[str, int]:
    """Rows per table of the service's store (SQLite or PostgreSQL)."""
    if svc.settings.store_path and str(svc.settings.store_path).startswith("postgresql"):
        q = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        q = "SELECT name FROM sqlite_master WHERE type = 'table'"
    tables = [r[0] for r in svc.store._fetchall(q)]
    return {t: int(svc.store._fetchall(f'SELECT COUNT(*) FROM "{t}"')[0][0]) for t in tables}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_page_two_skips_page_one_and_the_read_path_writes_nothing(request, service_factory, backend):
    store = None if backend == "sqlite" else request.getfixturevalue("pg_url")  # skips without PostgreSQL
    svc = service_factory(cursor_secret=SECRET, **({} if store is None else {"store_path": store}))
    u = _viewer(svc)
    with TestClient(create_app(svc)) as c:
        before = _row_counts(svc)
        p1 = _page(c, u)
        p2 = _page(c, u, p1["next_cursor"])
        p3 = _page(c, u, p2["next_cursor"])
        assert len(_ids(p1)) == len(_ids(p2)) == len(_ids(p3)) == 10
        assert not _ids(p1) & _ids(p2) and not (_ids(p1) | _ids(p2)) & _ids(p3)
        assert p2["filtered"]["served_in_session"] >= 1
        assert _row_counts(svc) == before  # no served marks (nor anything else) written by reads
        assert "served" in before and before["served"] == 0
        # The cursor is the only state: without it the first page comes back as it was.
        assert _ids(_page(c, u)) == _ids(p1)


@pytest.mark.parametrize("how", ["tampered", "other_user", "expired", "malformed", "other_secret"])
def test_a_bad_cursor_is_a_422_naming_cursor(svc, how):
    u = _viewer(svc)
    with TestClient(create_app(svc)) as c:
        tok = _page(c, u)["next_cursor"]
        user = u
        if how == "tampered":
            head, payload, tag = tok.split(".")
            tok = f"{head}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{tag}"
        elif how == "other_user":
            user = u + 1
        elif how == "expired":
            clock = _Clock(0.0)
            c.app.state.cursors = CursorCodec(SECRET.encode(), ttl_s=5, clock=clock)
            tok = _page(c, u)["next_cursor"]
            clock.t = 5.0
        elif how == "malformed":
            tok = "v1.not-a-cursor"
        else:
            c.app.state.cursors = CursorCodec(b"another-secret-0123456789", clock=_Clock(0.0))
        r = c.post("/v1/feed", json={"user_id": user, "k": 10, "cursor": tok})
        assert r.status_code == 422, r.text
        err = r.json()["detail"][0]
        assert err["loc"] == ["body", "cursor"] and err["type"] == "invalid_cursor"
        want = {"tampered": "signature", "other_user": "another user", "expired": "expired",
                "malformed": "malformed", "other_secret": "signature"}[how]  # fmt: skip
        assert want in err["msg"]
    # Not even valid base64 characters: refused by the schema, still naming cursor.
    with TestClient(create_app(svc)) as c:
        for bad in ("v1.a b.c", "x" * (MAX_CURSOR_CHARS + 1)):
            r = c.post("/v1/feed", json={"user_id": u, "k": 10, "cursor": bad})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "cursor"]


def test_session_id_is_refused_and_writes_nothing(svc):
    u = _viewer(svc)
    with TestClient(create_app(svc)) as c:
        before = _row_counts(svc)
        r = c.post("/v1/feed", json={"user_id": u, "k": 10, "session_id": "s1"})
        assert r.status_code == 422
        err = r.json()["detail"][0]
        assert err["loc"] == ["body", "session_id"] and "cursor" in err["msg"]
        assert _row_counts(svc) == before


def test_two_apps_with_one_secret_accept_each_others_cursors(svc):
    u = _viewer(svc)
    other = svc.settings.model_copy(update={"cursor_secret": SecretStr("another-secret-0123456789")})
    with TestClient(create_app(svc)) as a, TestClient(create_app(svc)) as b, TestClient(create_app(svc, other)) as x:
        p1 = _page(a, u)
        p2 = _page(b, u, p1["next_cursor"])  # b: its own codec, the same configured secret
        assert not _ids(p1) & _ids(p2)
        assert not (_ids(p1) | _ids(p2)) & _ids(_page(a, u, p2["next_cursor"]))
        r = x.post("/v1/feed", json={"user_id": u, "k": 10, "cursor": p1["next_cursor"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "cursor"]


def test_an_unset_secret_warns_and_signs_per_process(svc, caplog):
    settings = svc.settings.model_copy(update={"cursor_secret": None})
    with caplog.at_level(logging.WARNING, logger="phoenix_recsys.serve.api.cursor"):
        a, b = CursorCodec.from_settings(settings), CursorCodec.from_settings(settings)
    assert "PHOENIX_CURSOR_SECRET" in caplog.text
    with pytest.raises(CursorError, match="signature"):
        b.verify(a.issue(1, [2]), 1)


def test_the_secret_comes_from_the_environment_or_file_and_is_masked(tmp_path):
    from phoenix_recsys.serve.settings import SettingsError, load_settings

    env = {"PHOENIX_CURSOR_SECRET": SECRET, "PHOENIX_CURSOR_TTL_S": "60", "PHOENIX_INSECURE_DEV": "true"}
    s = load_settings(env=env)
    assert s.cursor_secret.get_secret_value() == SECRET and s.cursor_ttl_s == 60
    assert s.public_dict()["cursor_secret"] == "***"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"cursor_secret": SECRET, "insecure_dev": True}))
    tok = CursorCodec.from_settings(s).issue(3, [1])
    assert CursorCodec.from_settings(load_settings(env={}, config_file=cfg)).verify(tok, 3).served.tolist() == [1]
    with pytest.raises(SettingsError, match="cursor_secret"):
        load_settings(env={**env, "PHOENIX_CURSOR_SECRET": "short"})


def test_a_rotated_secret_keeps_open_cursors_valid_only_while_the_old_one_is_listed():
    old, new = b"o" * 32, b"n" * 32
    tok = _codec(old).issue(7, [4, 2])
    rotated = _codec(new, previous=[old])
    assert rotated.verify(tok, 7).served.tolist() == [4, 2]  # open session survives the rotation
    fresh = rotated.issue(7, [1])
    with pytest.raises(CursorError, match="signature"):  # new cursors are signed with the new secret only
        _codec(old).verify(fresh, 7)
    assert _codec(new).verify(fresh, 7).served.tolist() == [1]
    with pytest.raises(CursorError, match="signature"):  # the old secret dropped from the list: refused
        _codec(new).verify(tok, 7)
    with pytest.raises(ValueError, match="previous cursor secret 0"):
        CursorCodec(new, previous=[b"short"])


def test_previous_secrets_come_from_the_environment_as_a_json_list_and_are_masked():
    from phoenix_recsys.serve.settings import SettingsError, load_settings

    old = "old-cursor-secret-0123456789"
    env = {"PHOENIX_CURSOR_SECRET": SECRET, "PHOENIX_CURSOR_PREVIOUS_SECRETS": json.dumps([old]),
           "PHOENIX_INSECURE_DEV": "true"}
    s = load_settings(env=env)
    assert s.public_dict()["cursor_previous_secrets"] == ["***"]
    tok = CursorCodec(old.encode()).issue(3, [9])
    assert CursorCodec.from_settings(s).verify(tok, 3).served.tolist() == [9]
    with pytest.raises(SettingsError, match="cursor_previous_secrets"):
        load_settings(env={**env, "PHOENIX_CURSOR_PREVIOUS_SECRETS": json.dumps(["short"])})
