"""Index snapshots while serving: save, find the newest valid one, and prune old ones.

A snapshot is the corpus index as of one post-sequence number (`Store.post_seq`): everything up to
that number is in it and nothing after. A server that starts from one only embeds the posts
changed since (`IndexFollower.sync`), instead of the whole corpus.

Layout, under `<index_dir>/snapshots/`:

    <seq, 16 digits>.<server id>/     index.faiss, ids.npy, alive.npy, meta.json (`CorpusIndex.save`)
    .tmp.<server id>.<pid>.<n>/       a snapshot being written (never read)

* Keyed by server id and seq, so servers and workers sharing a directory never write the same path;
  each prunes only its own older snapshots. Any server may load any server's snapshot of the same
  store and bundle (the fingerprint says which).
* Atomic: files are written and fsynced in a private temporary directory, which is then renamed
  into place (and the parent fsynced), so a kill -9 mid-write leaves only a `.tmp.*` directory.
* Self-checking: the fingerprint in `meta.json` binds the bundle, the store and the seq in the name,
  and every file has a checksum (`CorpusIndex.load`), so a corrupt, torn or renamed snapshot is
  skipped (an older one, or a full build, is used instead) and never served.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

from phoenix_recsys.serve.index.config import IndexConfig, make_fingerprint
from phoenix_recsys.serve.index.corpus import CorpusIndex
from phoenix_recsys.testing.crash import crash_point

_log = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^(\d{16})\.([A-Za-z0-9_-]{1,64})$")
_TMP_PREFIX = ".tmp."
_counter = itertools.count()


class Snapshot(NamedTuple):
    """One snapshot directory: its post-sequence number, writer and path."""

    seq: int
    server_id: str
    path: Path


def clean_server_id(server_id: str) -> str:
    """`server_id` restricted to `[A-Za-z0-9_-]` (at most 64 characters), usable in a file name."""
    out = re.sub(r"[^A-Za-z0-9_-]", "-", str(server_id))[:64]
    if not out:
        raise ValueError("server_id must not be empty")
    return out


def snapshot_fingerprint(base: str, seq: int) -> str:
    """The fingerprint a snapshot at `seq` carries: `base` (bundle + store) bound to the seq."""
    return make_fingerprint("phoenix-index-snapshot", base, str(int(seq)))


def list_snapshots(root: str | Path) -> list[Snapshot]:
    """Complete snapshot directories under `root/snapshots`, newest seq first."""
    d = Path(root) / SNAPSHOT_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            out.append(Snapshot(int(m.group(1)), m.group(2), p))
    return sorted(out, key=lambda s: (s.seq, s.server_id), reverse=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(
    root: str | Path, index: CorpusIndex, *, seq: int, server_id: str, base_fingerprint: str, keep: int = 2
) -> Path:
    """Write `index` (which holds every post change up to `seq`) as a snapshot, then prune.

    No change above `seq` may be applied to `index` while it is serialised here (the follower
    instead serialises under its apply lock and calls `write_snapshot_blobs`).

    Args:
      root: the index directory.
      index: the index.
      seq: the post-sequence number the index is current to.
      server_id: this server's (or worker's) id; see `clean_server_id`.
      base_fingerprint: bundle + store fingerprint (`snapshot_fingerprint` adds the seq).
      keep: how many of this server's snapshots to keep (older ones are removed), >= 1.

    Returns:
      The snapshot directory.
    """
    blobs, meta = index.to_blobs(snapshot_fingerprint(base_fingerprint, seq))
    return write_snapshot_blobs(root, blobs, meta, seq=seq, server_id=server_id, keep=keep)


def write_snapshot_blobs(
    root: str | Path, blobs: dict[str, bytes], meta: dict, *, seq: int, server_id: str, keep: int = 2
) -> Path:
    """`write_snapshot` from `CorpusIndex.to_blobs` output (serialised by the caller under its lock)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    sid = clean_server_id(server_id)
    d = Path(root) / SNAPSHOT_DIR
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{int(seq):016d}.{sid}"
    if final.exists():  # this server already wrote this exact state
        return final
    tmp = d / f"{_TMP_PREFIX}{sid}.{os.getpid()}.{next(_counter)}"
    tmp.mkdir()
    try:
        files = {**blobs, "meta.json": json.dumps(meta, indent=2).encode()}
        for n, (name, data) in enumerate(files.items(), 1):
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            crash_point("snapshot-after-files", n)  # test-only (testing/crash.py): kill -9 mid-write
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, sid, keep=keep)
    return final


def prune(root: str | Path, server_id: str, *, keep: int) -> None:
    """Remove this server's snapshots beyond the newest `keep`, and its leftover temporary dirs."""
    sid = clean_server_id(server_id)
    mine = [s for s in list_snapshots(root) if s.server_id == sid]
    for s in mine[keep:]:
        shutil.rmtree(s.path, ignore_errors=True)
    d = Path(root) / SNAPSHOT_DIR
    for p in d.glob(f"{_TMP_PREFIX}{sid}.*"):
        try:
            pid = int(p.name.split(".")[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue  # a write may be in flight (ours in another thread, or a live process's)
        shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_newest(
    root: str | Path, base_fingerprint: str, *, max_seq: int, config: IndexConfig | None = None
) -> tuple[CorpusIndex, Snapshot] | None:
    """The newest valid snapshot of this bundle + store with seq <= `max_seq`, or None.

    Snapshots that fail their checks (other bundle or store, torn, corrupt, renamed) are skipped
    with a log line; one ahead of the store's sequence (`max_seq`) belongs to another store.
    """
    for snap in list_snapshots(root):
        if snap.seq > max_seq:
            _log.info("skipping snapshot %s: ahead of the store's post sequence %d", snap.path, max_seq)
            continue
        index = CorpusIndex.load(snap.path, snapshot_fingerprint(base_fingerprint, snap.seq), config=config)
        if index is not None:
            return index, snap
    return None
