"""Structured logs (issue 14): `serve --log-format json` writes only JSON lines, access log included."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from phoenix_recsys.serve.logs import ACCESS_LOGGER, JsonFormatter, LogFormat, configure_logging, log_access
from phoenix_recsys.serve.settings import SettingsError, load_settings
from phoenix_recsys.testing.servers import AUTH, KEY, Server


def test_json_server_log_is_one_object_per_line_with_the_request_id(bundle_dir, world, tmp_path, jax_cache_dir, runtime):
    srv = Server(bundle_dir, world.path, tmp_path, jax_cache_dir, "jsonlog")
    srv.extra_args = ["--log-format", "json", "--log-level", "info"]
    srv.start()
    try:
        with httpx.Client(timeout=30) as c:
            r1 = c.post(srv.url + "/v1/feed", json={"user_id": 3, "k": 5}, headers={**AUTH, "X-Request-ID": "req-abc.1"})
            r2 = c.post(srv.url + "/v1/feed", json={"user_id": 3, "k": "x"})  # 422, anonymous public read
            r3 = c.post(srv.url + "/v1/events", json={"events": []}, headers={"Authorization": "Bearer wrong-key-0123456789"})
    finally:
        srv.stop()
    assert r1.status_code == 200 and r1.headers["x-request-id"] == "req-abc.1"
    assert r2.status_code == 422 and r3.status_code == 401
    lines = [ln for ln in srv.log.read_text().splitlines() if ln.strip()]
    assert lines
    records = []
    for ln in lines:  # every line of the stream, start-up and uvicorn's own included
        rec = json.loads(ln)
        assert {"ts", "level", "msg"} <= rec.keys(), ln
        records.append(rec)
    access = {r["request_id"]: r for r in records if r.get("logger") == ACCESS_LOGGER}
    a1 = access["req-abc.1"]
    assert (a1["method"], a1["path"], a1["status"], a1["key"], a1["client"]) == ("POST", "/v1/feed", 200, "default", "127.0.0.1")
    assert a1["duration_ms"] > 0
    a2 = access[r2.headers["x-request-id"]]
    assert a2["status"] == 422 and a2["key"] == "anonymous:127.0.0.1"
    a3 = access[r3.headers["x-request-id"]]
    assert a3["status"] == 401 and a3["key"] is None
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)  # uvicorn's lines are JSON too
    text = srv.log.read_text()
    assert KEY not in text and "wrong-key-0123456789" not in text  # no secret is ever logged


def test_formatter_keeps_fields_and_exceptions_on_one_line():
    buf = io.StringIO()
    restore = configure_logging("json", "info", stream=buf)
    try:
        log_access({"request_id": "r1", "method": "GET", "path": "/x", "status": 503, "duration_ms": 1.5,
                    "key": None, "client": "1.2.3.4"})  # fmt: skip
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logging.getLogger("phoenix_recsys.test").exception("failed")
    finally:
        restore()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    a, e = (json.loads(ln) for ln in lines)
    assert a["level"] == "error" and a["status"] == 503 and a["request_id"] == "r1"
    assert e["msg"] == "failed" and "RuntimeError: boom" in e["exc"]
    assert JsonFormatter().format(logging.makeLogRecord({"msg": "p", "fields": {"path": object()}}))  # never fails


def test_log_format_follows_flag_over_env_over_file(tmp_path):
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({"log_format": "json", "writes_enabled": False}))
    assert load_settings(env={}, config_file=cfg).log_format is LogFormat.JSON
    assert load_settings(env={"PHOENIX_LOG_FORMAT": "text"}, config_file=cfg).log_format is LogFormat.TEXT
    assert load_settings(env={"PHOENIX_LOG_FORMAT": "text"}, config_file=cfg, log_format="json").log_format is LogFormat.JSON
    with pytest.raises(SettingsError, match="PHOENIX_LOG_FORMAT"):
        load_settings(env={"PHOENIX_LOG_FORMAT": "xml"}, writes_enabled=False)
