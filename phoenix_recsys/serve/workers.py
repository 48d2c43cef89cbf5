"""`serve --workers N`: several worker processes on one port and one store.

Each worker is a separate process with its own models and its own corpus index; the index
follower (`serve.index.follower`) keeps every worker's index current from the store's post
sequence, so a post written through one worker is retrievable through all within about one poll
interval. Relations, events and seen/served marks live in the store, so they apply at once.

The parent seeds the store and builds (and snapshots) the index once before any worker starts, so
the workers only load that snapshot instead of racing to seed and embed. Uvicorn then starts the
workers through `app_factory`, which reads its job from `PHOENIX_WORKER_SPEC` (paths and CLI
overrides only: the API key stays in the environment, never in the spec).

Each worker takes the lowest free slot `i` (an advisory file lock in the index directory) and names
its snapshots `<server id>-w<i>`, so workers never write over each other's files and a restarted
worker prunes its predecessor's snapshots.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any

SPEC_ENV = "PHOENIX_WORKER_SPEC"
_slot_files: list[Any] = []  # keep the lock files open for the process's life


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """What a worker process needs to open its service (no secrets)."""

    bundle: str
    workers: int
    data: str | None = None
    config: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> WorkerSpec:
        raw = os.environ.get(SPEC_ENV)
        if not raw:
            raise RuntimeError(f"{SPEC_ENV} is not set: app_factory runs only under `serve --workers N`")
        return cls(**json.loads(raw))


def take_slot(directory: Path, workers: int) -> int:
    """The lowest worker slot in `[0, workers)` no live process holds (advisory `flock`)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(workers):
        f = open(directory / f".worker-{i}.lock", "a+")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _slot_files.append(f)
        return i
    raise RuntimeError(f"all {workers} worker slots in {directory} are taken")


def _settings(spec: WorkerSpec, **extra: Any) -> Any:
    from phoenix_recsys.serve.settings import load_settings

    return load_settings(config_file=spec.config, **{**spec.overrides, **extra})


def prepare(spec: WorkerSpec) -> None:
    """In the parent: seed the store and build + snapshot the index once, then release everything."""
    from phoenix_recsys.serve.pipeline import FeedService

    settings = _settings(spec, warmup=False, index_follow=False, store_multi_writer=True)
    FeedService.open(spec.bundle, settings=settings, data_dir=spec.data).close()


def prepare_in_child(spec: WorkerSpec) -> None:
    """`prepare` in a child process, so the parent (uvicorn's supervisor, alive as long as the workers)
    never holds the models, JAX's heap or the index build's peak: at 1M posts it stayed at ~1 GiB RSS
    after `prepare` released everything (freed heap is not returned to the OS)."""
    import subprocess
    import sys

    env = {**os.environ, SPEC_ENV: spec.to_env()}
    code = "from phoenix_recsys.serve.workers import WorkerSpec, prepare; prepare(WorkerSpec.from_env())"
    rc = subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode
    if rc != 0:
        raise RuntimeError(f"seeding and indexing for the workers failed (exit status {rc}); see the messages above")


def app_factory() -> Any:
    """Uvicorn's factory in each worker: open the service (loading the parent's snapshot), return the app."""
    from phoenix_recsys.serve.api import create_app
    from phoenix_recsys.serve.logs import configure_logging
    from phoenix_recsys.serve.pipeline import FeedService, apply_process_settings, default_server_id

    spec = WorkerSpec.from_env()
    base = _settings(spec)
    # A spawned worker starts with no logging set up: route its records (access log too) as the parent does.
    configure_logging(base.log_format, os.environ.get("PHOENIX_WORKER_LOG_LEVEL", "info"))
    index_dir = Path(base.index_dir) if base.index_dir is not None else Path(spec.bundle) / "index"
    slot = take_slot(index_dir, spec.workers)
    settings = _settings(spec, server_id=f"{base.server_id or default_server_id(base)}-w{slot}", store_multi_writer=True)
    apply_process_settings(settings)
    service = FeedService.open(spec.bundle, settings=settings, data_dir=None)
    atexit.register(service.close)  # a clean worker exit writes its final snapshot
    return create_app(service, reload_settings=lambda: _settings(spec))  # admin reload-keys, per worker
