"""KuaiRand logs (`log_*.csv`, header row, 19 integer columns; .gz read directly).

Mapping (recorded in the manifest notes):
  * one event per log row; every row is an impression (shown video), so rows without any action
    are the ranker's negatives.
  * actions: click, like, follow, comment, forward, hate (negative), long_view, profile_enter
    (binary, from the 0/1 flags) and play_time (continuous, seconds = play_time_ms / 1000).
  * timestamp = time_ms // 1000; rows are ordered by (user, time_ms, file position) first, so the
    sub-second order survives the truncation to seconds (`date` / `hourmin` are ignored: they are
    rounded to the hour and can be off by up to an hour).
  * product_surface = `tab` (must be in [0, 16)).
  * author: KuaiRand logs carry none. With `video_features` (e.g. `video_features_basic_1k.csv`,
    columns video_id, author_id, ...) the video's author is used; otherwise every video is its own
    author (author_id = video_id), which adds no false sharing between videos.
  * posts: video_duration = duration_ms / 1000 (max over the video's rows; 0 = unknown);
    created_at = the video's first impression (or the features' upload date, if earlier).
  * extra event columns: is_rand (bool), profile_stay_time, comment_stay_time (raw int64).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np

from phoenix_recsys.actions import Action, ActionKind, ActionVocabulary
from phoenix_recsys.data.importers._common import (
    BadLines,
    finish,
    iter_csv_records,
    posts_from_events,
    read_checked,
    read_header,
)
from phoenix_recsys.data.schema import PRODUCT_SURFACE_VOCAB_SIZE, Dataset

ACTIONS = ActionVocabulary(
    (
        Action(name="click"),
        Action(name="like"),
        Action(name="follow"),
        Action(name="comment"),
        Action(name="forward"),
        Action(name="hate", negative=True),
        Action(name="long_view"),
        Action(name="profile_enter"),
        Action(name="play_time", kind=ActionKind.CONTINUOUS),
    )
)
_FLAG_COLUMNS = {
    "click": "is_click",
    "like": "is_like",
    "follow": "is_follow",
    "comment": "is_comment",
    "forward": "is_forward",
    "hate": "is_hate",
    "long_view": "long_view",
    "profile_enter": "is_profile_enter",
}
REQUIRED_COLUMNS = (
    "user_id", "video_id", "time_ms", *_FLAG_COLUMNS.values(), "play_time_ms", "duration_ms",
    "profile_stay_time", "comment_stay_time", "is_rand", "tab",
)  # fmt: skip
_BEIJING = dt.timezone(dt.timedelta(hours=8))


def _video_features(path: Path, bad: BadLines) -> tuple[dict[int, int], dict[int, int]]:
    """video_id -> author_id and -> upload time (s), from a KuaiRand video-features CSV."""
    authors: dict[int, int] = {}
    uploads: dict[int, int] = {}
    head: list[str] | None = None
    for lineno, rec in iter_csv_records(path, ","):
        if head is None:
            head = [h.strip() for h in rec]
            missing = [c for c in ("video_id", "author_id") if c not in head]
            if missing:
                raise ValueError(f"{path}: line 1: video-features header lacks columns {missing}")
            iv, ia = head.index("video_id"), head.index("author_id")
            iu = head.index("upload_dt") if "upload_dt" in head else None
            continue
        if len(rec) != len(head):
            bad.bad(path, lineno, f"expected {len(head)} fields, got {len(rec)}")
            continue
        try:
            vid, aid = int(rec[iv]), int(rec[ia])
        except ValueError:
            bad.bad(path, lineno, f"video_id/author_id {rec[iv]!r}/{rec[ia]!r} are not ints")
            continue
        if vid < 0 or aid < 0:
            bad.bad(path, lineno, f"negative video_id/author_id {vid}/{aid}")
            continue
        authors[vid] = aid
        if iu is not None and rec[iu].strip():
            try:
                day = dt.datetime.strptime(rec[iu].strip()[:10], "%Y-%m-%d").replace(tzinfo=_BEIJING)
                uploads[vid] = int(day.timestamp())
            except ValueError:
                pass  # an unparsable upload date only loses the creation-time hint
    bad.flush()
    return authors, uploads


def import_kuairand(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    video_features: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Import a KuaiRand log CSV into a dataset directory.

    Args:
      path: a KuaiRand log (`log_standard_*.csv`, `log_random_*.csv`, optionally .gz).
      out: the dataset directory to write.
      skip_bad: count and skip malformed lines instead of raising.
      video_features: optional video-features CSV giving each video's author.
      name: dataset name (default: the file name without extensions).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    head = read_header(p, ",")
    missing = [c for c in REQUIRED_COLUMNS if c not in head]
    if missing:
        raise ValueError(f"{p}: line 1: KuaiRand header lacks columns {missing} (has {head})")
    dups = sorted({h for h in head if head.count(h) > 1})
    if dups:
        raise ValueError(f"{p}: line 1: duplicate header columns {dups}")
    fields = [(h, "int" if h in REQUIRED_COLUMNS or h in ("date", "hourmin") else "str") for h in head]
    bad = BadLines(skip_bad)

    def check(c):
        probs = []
        for col in ("user_id", "video_id", "time_ms", "play_time_ms", "duration_ms"):
            probs.append((c[col] < 0, lambda i, col=col: f"column {col!r}: negative value {c[col][i]}"))
        for col in (*_FLAG_COLUMNS.values(), "is_rand"):
            probs.append(
                ((c[col] != 0) & (c[col] != 1), lambda i, col=col: f"column {col!r}: {c[col][i]} is not 0/1")
            )
        tab = c["tab"]
        probs.append(
            (
                (tab < 0) | (tab >= PRODUCT_SURFACE_VOCAB_SIZE),
                lambda i: (
                    f"column 'tab': {tab[i]} is outside the product_surface range [0, {PRODUCT_SURFACE_VOCAB_SIZE})"
                ),
            )
        )
        return probs

    cols, pos = read_checked(p, ",", fields, bad, check, header=True)
    # Order by (user, time_ms, file position): the sub-second order is kept although timestamps
    # become whole seconds, and exact ties keep the file order.
    order = np.lexsort((pos, cols["time_ms"], cols["user_id"]))
    cols = {k: v[order] for k, v in cols.items()}
    video = cols["video_id"]
    notes: dict = {
        "importer": "kuairand",
        "actions": "binary flags is_click/is_like/is_follow/is_comment/is_forward/is_hate/long_view/is_profile_enter; play_time = play_time_ms / 1000 (s)",
        "timestamp": "time_ms // 1000; order within a second by time_ms, then file position",
        "product_surface": "tab",
        "ids": "KuaiRand user_id and video_id as given; post_id = video_id",
    }
    created_hint = None
    if video_features is not None:
        fpath = Path(video_features)
        if not fpath.is_file():
            raise ValueError(f"{fpath}: no such file")
        authors_of, uploads = _video_features(fpath, bad)
        author = np.array([authors_of.get(int(v), -1) for v in video.tolist()], dtype=np.int64)
        unknown = author < 0
        # Videos absent from the features file fall back to being their own author, offset past
        # every real author id so the two id ranges cannot collide.
        offset = (max(authors_of.values()) + 1) if authors_of else 0
        author = np.where(unknown, offset + video, author)
        notes["author"] = (
            f"author_id from {fpath.name}; {int(np.unique(video[unknown]).size)} videos missing from it are "
            f"their own author (author_id = {offset} + video_id)"
        )
        if uploads:
            created_hint = uploads
    else:
        author = video.copy()
        notes["author"] = "no video features given: every video is its own author (author_id = video_id)"
    ts = cols["time_ms"] // 1000
    events = {
        "user_id": cols["user_id"],
        "post_id": video,
        "author_id": author,
        "timestamp": ts,
        "product_surface": cols["tab"].astype(np.int32),
    }
    for action, col in _FLAG_COLUMNS.items():
        events[action] = cols[col] == 1
    events["play_time"] = (cols["play_time_ms"] / 1000.0).astype(np.float32)
    events["is_rand"] = cols["is_rand"] == 1
    events["profile_stay_time"] = cols["profile_stay_time"]
    events["comment_stay_time"] = cols["comment_stay_time"]
    uniq, inv = np.unique(video, return_inverse=True)
    duration = np.zeros(uniq.size, dtype=np.float64)
    np.maximum.at(duration, inv.reshape(-1), cols["duration_ms"] / 1000.0)
    posts = posts_from_events(video, author, ts, extra={"video_duration": duration.astype(np.float32)})
    if created_hint:
        hint = np.array(
            [created_hint.get(int(v), np.iinfo(np.int64).max) for v in posts["post_id"].tolist()],
            dtype=np.int64,
        )
        posts["created_at"] = np.maximum(np.minimum(posts["created_at"], hint), 0)
        notes["created_at"] = "min(upload_dt midnight UTC+8, first impression)"
    else:
        notes["created_at"] = "first impression time of the video"
    return finish(
        out, events, posts, ACTIONS, name=name or p.name.split(".")[0], source=str(p), notes=notes, bad=bad
    )
