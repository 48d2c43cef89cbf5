"""Service settings: one validated pydantic model, built by `load_settings` (never at import time).

Precedence, highest first: explicit overrides (CLI flags) > environment variables `PHOENIX_<FIELD>`
(e.g. `PHOENIX_API_KEY`, `PHOENIX_MAX_K`) > a JSON config file > the defaults below. `ServeSettings`
is a pydantic-settings `BaseSettings`; `load_settings` turns the environment and file sources on
(constructing `ServeSettings(...)` directly reads only its arguments, so tests and library callers
are never surprised by the process environment). Scalars are parsed by pydantic's lax mode ("8000"
-> 8000, "true" -> True), container fields (`scoring`, `disabled_filters`, `engagement_actions`) are
JSON, and an empty string, "none" or "null" means None for optional fields.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import json
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as _SourceError

from phoenix_recsys.serve.filters import FilterConfig, FilterName
from phoenix_recsys.serve.index import IndexConfig
from phoenix_recsys.serve.logs import LogFormat
from phoenix_recsys.serve.scoring import ScoringConfig

ENV_PREFIX = "PHOENIX_"
#: The environment's spelling of None after normalisation ("", "none" and "null" all mean None).
_NONE = "null"
#: The shortest API key accepted: long enough that guessing it over HTTP is hopeless.
MIN_API_KEY_LENGTH = 16

PositiveInt = Annotated[int, Field(ge=1)]
#: Request-size limits stay within the API schema's ceiling on list lengths (`api.schemas.MAX_LIST_ITEMS`).
RequestLimit = Annotated[int, Field(ge=1, le=10_000)]
NonNegInt = Annotated[int, Field(ge=0)]


class Clock(enum.StrEnum):
    """Where the request time `now` comes from.

    WALL: the machine clock (a live product).
    DATA: the newest engagement or post time in the store (the wall clock while the store is
      empty). Public datasets are historical, so on them the wall clock would make every post years
      old; the data clock keeps max-age filtering, post age and the popularity window meaningful.
      Once live events arrive with wall-clock timestamps the two agree; a live product that can go
      quiet should use WALL, since the data clock stands still without new events.
    """

    WALL = "wall"
    DATA = "data"


class Scope(enum.StrEnum):
    """What a key may do: READ (feed, rank, retrieve, history, metrics), WRITE (events, posts,
    relations), ADMIN (reload keys). Scopes are explicit: a write key reads only if it lists read."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class ApiKey(BaseModel):
    """One access key: a name (in logs and 403s, never the key), its SHA-256 and its scopes.

    Give either `key` (the secret, >= 16 characters) or `sha256` (its hex digest, so a settings file
    need not hold the secret). Only the digest is kept: the model drops the secret on validation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: tuple[Scope, ...] = (Scope.READ,)

    @model_validator(mode="before")
    @classmethod
    def _hash_the_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "key" in data:
            data = dict(data)
            key = data.pop("key")
            key = key.get_secret_value() if isinstance(key, SecretStr) else key
            if not isinstance(key, str) or len(key) < MIN_API_KEY_LENGTH:
                raise ValueError(f"key must be a string of at least {MIN_API_KEY_LENGTH} characters")
            if "sha256" in data:
                raise ValueError("give either key or sha256, not both")
            data["sha256"] = hash_key(key)
        return data


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what settings and the key ring keep instead of the key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class SettingsError(ValueError):
    """Settings are invalid; the message names the field and its environment variable."""


class ServeSettings(BaseSettings):
    """Everything the feed service and its HTTP API are configured by (see `docs/serving.md`).

    Attributes:
      host / port: where `serve` binds; loopback by default, so nothing is exposed by accident.
      api_key: one bearer key with every scope (read, write, admin); the simple setup.
      api_keys: named keys with scopes (`ApiKey`), e.g. `[{"name": "backend", "key": "...",
        "scopes": ["read", "write"]}]`; reloaded without a restart (SIGHUP or POST /v1/admin/reload-keys).
      writes_enabled: False (`--read-only`) makes every write endpoint answer 403.
      insecure_dev: with no key configured, accept every request without one (local development only).
      public_reads: read endpoints need no key (`--public-reads`); off by default.
      rate_limit_per_s / rate_limit_burst: per-key token bucket (per client address for anonymous
        reads): `burst` requests at once, refilled at `per_s`; over it is 429 with Retry-After.
        None turns it off.
      max_k / max_rank_candidates / max_retrieve_k / max_history_items / max_events_per_request /
        max_posts_per_request: request limits; exceeding one is a 422 naming the limit.
      in_network_limit / in_network_per_author: the in-network source (SPEC 7: 1,200, capped per
        author so one prolific author cannot fill it).
      out_of_network_limit: two-tower retrieval candidates per request (SPEC 7: 1,000).
      cold_start_popular / cold_start_fresh: the cold-start sources' sizes (no history).
      popular_window_s: count engagements of the last this-many seconds for "popular" (default 7
        days); None = all time.
      cold_start_refresh_s: the cold-start popular/fresh lists are computed in a background thread
        every this many seconds (default 30), so a cold-start feed never scans the engagements
        table on the request path; a post added through this service refreshes them at once. A
        refresh that finds the window, the engagements and the posts unchanged keeps the lists
        (SQLite; PostgreSQL recomputes every time).
      in_network_max_authors: the in-network source reads the newest posts of at most this many
        followed authors (default 1,000), most recently engaged first (then by author id).
      seen_window_s / seen_limit: the seen set a feed excludes is the last `seen_window_s` seconds
        (default 90 days; None = lifetime) and at most the `seen_limit` most recent impressions and
        engagements each (default 5,000), so a user's cost does not grow with their lifetime.
      served_limit: legacy, kept so existing configs load: the feed no longer reads served rows
        (pagination is the signed cursor, see `cursor_*`); default 5,000.
      served_retention_s: served rows older than this are deleted (default 2 days; None = keep),
        at most once per `cold_start_refresh_s` by the background refresher.
      cursor_secret: HMAC key of the feed's pagination cursors (>= 16 characters); every server and
        worker behind one API must share it. None: a random per-process secret and a logged warning.
      cursor_previous_secrets: earlier cursor secrets still accepted (never used to sign), so the secret
        can be rotated without breaking open sessions: keep the old one here for `cursor_ttl_s`.
      cursor_ttl_s: a feed cursor expires this many seconds after its page was served (default 1 h).
      cursor_max_ids: most served post ids one cursor carries (1..5000); a longer session drops the oldest.
      max_age_s: drop older posts; None (default) because public datasets span years.
      disabled_filters: filter names to skip (see `FilterName`).
      engagement_actions: which actions make an event enter the model's history. None = the rule the
        bundle's ranker was trained with (recorded in the bundle; every binary action by default).
      scoring: `ScoringConfig.from_json` overrides, e.g. `{"weights": {"reply": 6.0}}`.
      clock: see `Clock`.
      product_surface: the surface the feed is shown on (the candidates' surface token).
      store_path / index_dir: defaults `<bundle>/store.sqlite` and `<bundle>/index`.
      index_exact_max_size / index_ann_kind / hnsw_ef_search / ivf_nprobe / ivf_codec / ivf_refine:
        `IndexConfig` (exact_max_size, ann_kind, ...): exact search up to the size, then IVF by
        default (4-bit PQ codes, the shortlist re-scored exactly; BENCHMARKS.md, "ANN at 1M
        posts", has the measured curve behind it).
      chunk_size: largest candidate chunk of cached-context scoring.
      rank_batch_window_ms / rank_batch_max_requests: micro-batching of ranking across concurrent
        requests (`serve.feed.batcher`): a request waits up to this many milliseconds for others
        (up to `max_requests`, a power of two) and those of one candidate bucket are scored in one
        compiled call, with bitwise the scores each gets alone. 0 (default) turns it off: measured
        on the 2-core box it did not pay (see docs/serving.md, Performance).
      warmup: compile every program at start, so the first requests are not slow.
      post_mirror: answer the feed's post reads (in-network posts, hydration) from an in-memory
        copy of the store's servable posts, caught up to the store's post sequence before every
        read, so answers are the store's (~45 bytes per post plus text per server process; at 1M
        posts ~9 ms less per feed); False = read the store each time.
      faiss_threads: OpenMP threads per FAISS search, applied process-wide by the `serve` and
        `feed` commands (`apply_process_settings`); None leaves FAISS's default (all cores). One
        suits a server: concurrency comes from parallel requests, and OpenMP's spin-waiting on a
        busy machine made one 1,000-result search over 10k posts ~30x slower (25 ms vs 0.7 ms).
      index_follow: keep the index current from the store's post sequence in a background thread
        (posts written by other servers/workers become retrievable within ~`follow_poll_interval_s`).
      follow_poll_interval_s: post-sequence poll period when the store cannot notify.
      index_snapshot_interval_s / index_snapshot_every_posts: snapshot the index while serving
        every this many seconds / applied post changes (None = off); see `serve.index.snapshot`.
      store_multi_writer: open the SQLite store in multi-writer mode, for several server or worker
        processes on one file (each keeps its index current through the follower); `serve --workers`
        sets it. Without it a second writer process is refused once the store's file lock is in place.
      source_budget_in_network_ms / source_budget_out_of_network_ms: time budget of each feed
        candidate source (default 1000 ms each; on a CPU box a source takes a few ms, the 1M-post
        scale run's whole feed p99 was 51 ms). A source that raises or is still running at its budget
        is skipped: the feed is served from the other sources and names it under `degraded`. The
        out-of-network budget covers the ANN search, not the user embedding (model work, like ranking).
      log_format: `text` (default) or `json`: every log line of `serve` (access log included) is
        one JSON object (`serve.logs`).
      server_id: this server's name in snapshot files (default `<hostname>-<port>`; workers add
        `-w<i>`), so servers sharing an index directory never write over each other.
    """

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", validate_default=True, env_prefix=ENV_PREFIX, env_parse_none_str=_NONE,
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    writes_enabled: bool = True
    api_keys: tuple[ApiKey, ...] = ()
    insecure_dev: bool = False
    public_reads: bool = False
    rate_limit_per_s: float | None = Field(None, gt=0)
    rate_limit_burst: PositiveInt = 50

    max_k: PositiveInt = 200
    max_rank_candidates: RequestLimit = 5000
    max_retrieve_k: RequestLimit = 1000
    max_history_items: RequestLimit = 1000
    max_events_per_request: RequestLimit = 1000
    max_posts_per_request: RequestLimit = 1000

    in_network_limit: NonNegInt = 1200
    in_network_per_author: NonNegInt = 50
    out_of_network_limit: NonNegInt = 1000
    cold_start_popular: NonNegInt = 500
    cold_start_fresh: NonNegInt = 500
    popular_window_s: PositiveInt | None = 7 * 86_400
    cold_start_refresh_s: float = Field(30.0, gt=0, le=86_400)
    in_network_max_authors: PositiveInt = 1000
    seen_window_s: PositiveInt | None = 90 * 86_400
    seen_limit: PositiveInt | None = 5000
    served_limit: PositiveInt | None = 5000
    served_retention_s: PositiveInt | None = 2 * 86_400
    cursor_secret: SecretStr | None = None
    cursor_previous_secrets: tuple[SecretStr, ...] = ()
    cursor_ttl_s: PositiveInt = 3600
    cursor_max_ids: Annotated[int, Field(ge=1, le=5000)] = 1000

    max_age_s: PositiveInt | None = None
    disabled_filters: tuple[str, ...] = ()
    engagement_actions: tuple[str, ...] | None = None
    scoring: dict[str, Any] | None = None

    clock: Clock = Clock.DATA
    product_surface: NonNegInt = 0

    # A SQLite file path, or a postgresql:// URL (kept a str: Path would fold its '//').
    store_path: str | Path | None = None
    index_dir: Path | None = None
    index_exact_max_size: NonNegInt = 50_000
    index_ann_kind: typing.Literal["ivf", "hnsw"] = "ivf"
    hnsw_ef_search: PositiveInt = 128
    ivf_nprobe: PositiveInt = 384
    ivf_codec: typing.Literal["pq4", "flat"] = "pq4"
    ivf_refine: int = Field(4, ge=1, le=64)
    chunk_size: PositiveInt = 1024
    rank_batch_window_ms: float = Field(0.0, ge=0, le=100)
    rank_batch_max_requests: int = Field(8, ge=2, le=64)
    warmup: bool = True
    faiss_threads: PositiveInt | None = 1
    post_mirror: bool = True
    index_follow: bool = True
    store_multi_writer: bool = False
    follow_poll_interval_s: float = Field(0.2, gt=0, le=60)
    index_snapshot_interval_s: float | None = Field(60.0, gt=0)
    index_snapshot_every_posts: PositiveInt | None = 10_000
    server_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    log_format: LogFormat = LogFormat.TEXT
    source_budget_in_network_ms: float = Field(1000.0, gt=0, le=60_000)
    source_budget_out_of_network_ms: float = Field(1000.0, gt=0, le=60_000)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("host must be a non-empty address, e.g. 127.0.0.1")
        return v.strip()

    @field_validator("rank_batch_max_requests")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"rank_batch_max_requests must be a power of two (2, 4, 8 ...), got {v}")
        return v

    @field_validator("api_key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        if len(v.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ValueError(f"api_key must be at least {MIN_API_KEY_LENGTH} characters")
        return v

    @field_validator("cursor_secret")
    @classmethod
    def _cursor_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode("utf-8")) < MIN_API_KEY_LENGTH:
            raise ValueError(f"cursor_secret must be at least {MIN_API_KEY_LENGTH} bytes")
        return v

    @field_validator("cursor_previous_secrets")
    @classmethod
    def _cursor_previous(cls, v: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for i, s in enumerate(v):
            if len(s.get_secret_value().encode("utf-8")) < MIN_API_KEY_LENGTH:
                raise ValueError(f"cursor_previous_secrets[{i}] must be at least {MIN_API_KEY_LENGTH} bytes")
        return v

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, v: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        names = [k.name for k in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate key name(s) {dup}")
        return v

    @field_validator("disabled_filters")
    @classmethod
    def _filters(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = {f.value for f in FilterName}
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown filter(s) {bad}; known: {sorted(known)}")
        return tuple(v)

    @field_validator("engagement_actions")
    @classmethod
    def _engagement(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError("engagement_actions must name at least one action (or be null for the default)")
        return v

    @field_validator("scoring")
    @classmethod
    def _scoring(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            ScoringConfig.from_json(v)  # ValueError naming the bad key or weight
        return v

    @model_validator(mode="after")
    def _writes_need_a_key(self) -> ServeSettings:
        # Refusing here means no code path can build an app that accepts anonymous writes by accident.
        if self.writes_enabled and not self.insecure_dev and not any(Scope.WRITE in k.scopes for k in self.keys()):
            raise ValueError(
                "writes are enabled but no API key is set: set PHOENIX_API_KEY (>= "
                f"{MIN_API_KEY_LENGTH} characters) or a PHOENIX_API_KEYS entry with the write scope, or run read-only (--read-only), or pass --insecure-dev "
                "for local development"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Sources, highest precedence first: arguments > environment > JSON file (only in `load_settings`)."""
        spec = _SOURCES.get()
        if spec is None:  # direct construction: the arguments only
            return (init_settings,)
        env, file_data = spec
        return (init_settings, _MappingEnvSource(settings_cls, env), _DictSource(settings_cls, file_data))

    # -- derived configs -----------------------------------------------------------------------
    def filter_config(self) -> FilterConfig:
        """The pre-ranking filters' configuration."""
        return FilterConfig(max_age_s=self.max_age_s, disabled=frozenset(FilterName(f) for f in self.disabled_filters))

    def index_config(self) -> IndexConfig:
        """The corpus index's configuration."""
        return IndexConfig(exact_max_size=self.index_exact_max_size, ann_kind=self.index_ann_kind,
                           hnsw_ef_search=self.hnsw_ef_search, ivf_nprobe=self.ivf_nprobe,
                           ivf_codec=self.ivf_codec, ivf_refine=self.ivf_refine)  # fmt: skip

    def keys(self) -> tuple[ApiKey, ...]:
        """Every configured key: `api_keys` plus `api_key` as the key named "default" with every scope."""
        legacy = () if self.api_key is None else (ApiKey(name="default", key=self.api_key, scopes=tuple(Scope)),)
        return legacy + self.api_keys

    @property
    def writes_need_key(self) -> bool:
        """Whether requests must carry a bearer key (False only in insecure dev mode with no key)."""
        return bool(self.keys()) or not self.insecure_dev

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, the key masked (for logs and `/healthz`)."""
        out = self.model_dump(mode="json")
        out["api_key"] = None if self.api_key is None else "***"
        out["cursor_secret"] = None if self.cursor_secret is None else "***"
        out["cursor_previous_secrets"] = ["***"] * len(self.cursor_previous_secrets)
        out["api_keys"] = [{"name": k.name, "scopes": [s.value for s in k.scopes]} for k in self.api_keys]
        return out


# -- the sources ---------------------------------------------------------------------------------
#: (environment, file data) while `load_settings` builds settings; None for direct construction.
_SOURCES: contextvars.ContextVar[tuple[Mapping[str, str], dict[str, Any]] | None] = contextvars.ContextVar(
    "phoenix_settings_sources", default=None
)


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass a dict, `serve` os.environ)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        optional = {env_var(n) for n, f in ServeSettings.model_fields.items() if _is_optional(f.annotation)}
        out: dict[str, str | None] = {}
        for k, v in self._env.items():
            if not k.upper().startswith(ENV_PREFIX):
                continue
            # Empty / "none" / "null" mean None for optional fields (one spelling for the source).
            if k.upper() in optional and v.strip().lower() in ("", "none", "null"):
                v = _NONE
            out[k.lower()] = None if v == _NONE else v
        return out


class _DictSource(PydanticBaseSettingsSource):
    """The JSON settings file's object (already read), the lowest-precedence source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)  # unknown keys reach the model, which forbids them by name


def env_var(field: str) -> str:
    """The environment variable of a settings field, e.g. `max_k` -> `PHOENIX_MAX_K`."""
    return ENV_PREFIX + field.upper()


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise SettingsError(f"cannot read settings file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise SettingsError(f"settings file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a JSON object of setting -> value")
    return data


def load_settings(
    *, env: Mapping[str, str] | None = None, config_file: str | os.PathLike[str] | None = None, **overrides: Any
) -> ServeSettings:
    """Build validated settings from overrides, the environment and an optional JSON file.

    Args:
      env: the environment to read (default `os.environ`); tests pass a dict.
      config_file: optional JSON object of setting -> value (lowest precedence but the defaults).
      **overrides: settings given explicitly (CLI flags); None values are ignored, so a flag left
        unset does not mask the environment.

    Returns:
      `ServeSettings`.

    Raises:
      SettingsError: a value is invalid, naming the field and its environment variable.
    """
    file_data = {} if config_file is None else _read_config_file(Path(config_file))
    token = _SOURCES.set((os.environ if env is None else env, file_data))
    try:
        return ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except _SourceError as e:  # an environment value that is not JSON where JSON is needed
        m = re.search(r'field "([^"]+)"', str(e))
        field = m.group(1) if m else "settings"
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        raise SettingsError(f"{env_var(field)} must be JSON{cause}") from None
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"])
            where = f"{field} ({env_var(field)})" if field in ServeSettings.model_fields else (field or "settings")
            problems.append(f"{where}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    finally:
        _SOURCES.reset(token)
