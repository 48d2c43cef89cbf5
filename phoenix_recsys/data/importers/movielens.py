"""MovieLens ratings (ML-100K `u.data`, ML-1M/10M `ratings.dat`, ml-latest / ml-25m `ratings.csv`).

Mapping (recorded in the manifest notes):
  * every rating is an engagement: `click` = True on every row; `favorite` = rating >= 4. MovieLens
    logs no impressions that were not rated, so there are no negatives; rank metrics over the full
    corpus are the meaningful ones. The raw `rating` is kept as an extra float32 event column.
  * movies are posts (post_id = movieId); author = the movie's first listed genre when a movies file
    lies beside the ratings (`u.item`, `movies.dat`, `movies.csv`; or given explicitly), else one
    constant author 0. Genre ids are fixed (`GENRES`), so they agree across MovieLens versions.
  * created_at = the movie's first rating time (MovieLens has no release timestamps); surface 0.
  * ids are MovieLens' own integers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.data.importers._common import (
    BadLines,
    finish,
    iter_csv_records,
    open_text,
    posts_from_events,
    read_checked,
    read_text_lines,
)
from phoenix_recsys.data.schema import Dataset

ACTIONS = ActionVocabulary.binary(["click", "favorite"])
FAVORITE_MIN_RATING = 4.0

GENRES: tuple[str, ...] = (
    "(no genres listed)", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""Author id = index here; 0 also stands for "unknown" genre and for movies missing from the file."""
_GENRE_ALIASES = {"Children": "Children's", "unknown": "(no genres listed)"}
# ML-100K u.item: 19 genre flags in this order.
_UITEM_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _detect(path: Path) -> str:
    with open_text(path, "latin-1") as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(f"{path}: line 1: empty; expected a MovieLens rating line or header")
    if "::" in first:
        return "dat"
    if first.lower().startswith("userid,"):
        return "csv"
    if "\t" in first:
        return "udata"
    raise ValueError(
        f"{path}: line 1: not a MovieLens ratings file (expected 'user::movie::rating::ts', a tab-separated "
        f"u.data line or a 'userId,movieId,rating,timestamp' header), got {first.strip()!r}"
    )


def _beside(path: Path, kind: str) -> Path | None:
    names = {"dat": ["movies.dat"], "csv": ["movies.csv"], "udata": ["u.item"]}[kind]
    for n in names:
        for cand in (path.parent / n, path.parent / (n + ".gz")):
            if cand.is_file():
                return cand
    return None


def _genre_id(name: str, extra: dict[str, int]) -> int:
    name = _GENRE_ALIASES.get(name.strip(), name.strip())
    if name in GENRES:
        return GENRES.index(name)
    if name not in extra:
        extra[name] = 100 + len(extra)  # unknown genre names get ids from 100 in order of appearance
    return extra[name]


def read_movies(path: Path, bad: BadLines) -> tuple[dict[int, int], dict[int, str], dict[str, int]]:
    """Movie id -> author (first-genre id) and -> title, from u.item / movies.dat / movies.csv."""
    authors: dict[int, int] = {}
    titles: dict[int, str] = {}
    extra: dict[str, int] = {}
    name = path.name.removesuffix(".gz")
    if name == "movies.csv":
        for lineno, rec in iter_csv_records(path, ","):
            if lineno == 1 and rec and rec[0] == "movieId":
                continue
            if len(rec) != 3:
                bad.bad(path, lineno, f"expected 3 fields movieId,title,genres, got {len(rec)}")
                continue
            try:
                mid = int(rec[0])
            except ValueError:
                bad.bad(path, lineno, f"movieId {rec[0]!r} is not an int")
                continue
            authors[mid] = _genre_id(rec[2].split("|")[0], extra)
            titles[mid] = rec[1]
        bad.flush()
        return authors, titles, extra
    lines = read_text_lines(path, ("utf-8", "latin-1"))  # ML-1M's movies.dat is Latin-1
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if name == "u.item":
            parts = line.split("|")
            if len(parts) != 5 + len(_UITEM_GENRES):
                bad.bad(
                    path, lineno, f"expected {5 + len(_UITEM_GENRES)} '|'-separated fields, got {len(parts)}"
                )
                continue
            flags = parts[5:]
            first = next(
                (g for g, f in zip(_UITEM_GENRES, flags, strict=True) if f.strip() == "1"), "unknown"
            )
            genre, title = first, parts[1]
        else:
            parts = line.split("::")
            if len(parts) != 3:
                bad.bad(
                    path, lineno, f"expected 3 '::'-separated fields MovieID::Title::Genres, got {len(parts)}"
                )
                continue
            genre, title = parts[2].split("|")[0], parts[1]
        try:
            mid = int(parts[0])
        except ValueError:
            bad.bad(path, lineno, f"movie id {parts[0]!r} is not an int")
            continue
        authors[mid] = _genre_id(genre, extra)
        titles[mid] = title
    bad.flush()
    return authors, titles, extra


def import_movielens(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    movies: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Import MovieLens ratings into a dataset directory.

    Args:
      path: `u.data`, `ratings.dat` or `ratings.csv` (optionally .gz); the format is detected.
      out: the dataset directory to write.
      skip_bad: count and skip malformed lines instead of raising.
      movies: the movies file; default: the one beside `path`, if any.
      name: dataset name (default: the ratings file's folder name).

    Raises:
      ValueError: a malformed line (file and line number) unless `skip_bad`.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    kind = _detect(p)
    bad = BadLines(skip_bad)
    sep, header = {"dat": ("::", False), "csv": (",", True), "udata": ("\t", False)}[kind]
    fields = [("user", "int"), ("movie", "int"), ("rating", "float"), ("ts", "int")]

    def check(c: dict[str, np.ndarray]):
        return [
            (c["user"] < 0, lambda i: f"negative user id {c['user'][i]}"),
            (c["movie"] < 0, lambda i: f"negative movie id {c['movie'][i]}"),
            (
                ~((c["rating"] >= 0) & (c["rating"] <= 10)),
                lambda i: f"rating {c['rating'][i]} outside [0, 10]",
            ),
            (c["ts"] < 0, lambda i: f"negative timestamp {c['ts'][i]}"),
        ]

    cols, _pos = read_checked(p, sep, fields, bad, check, header=header)
    notes: dict = {
        "importer": "movielens",
        "format": {"dat": "ratings.dat (::)", "csv": "ratings.csv", "udata": "u.data (tab)"}[kind],
        "actions": f"click = every rating (no negatives exist); favorite = rating >= {FAVORITE_MIN_RATING}",
        "ids": "MovieLens user and movie ids as given; post_id = movieId",
        "created_at": "first rating time of the movie",
        "product_surface": "0 for all events",
    }
    mpath = Path(movies) if movies is not None else _beside(p, kind)
    movie = cols["movie"]
    extra_posts = {}
    if mpath is not None:
        authors_of, titles, extra = read_movies(mpath, bad)
        known = np.array(list(authors_of), dtype=np.int64)
        vals = np.array(list(authors_of.values()), dtype=np.int64)
        order = np.argsort(known)
        known, vals = known[order], vals[order]
        idx = np.minimum(np.searchsorted(known, movie), max(known.size - 1, 0))
        found = known.size > 0
        hit = (known[idx] == movie) if found else np.zeros(movie.size, bool)
        author = np.where(hit, vals[idx] if found else 0, 0)
        n_missing = int(np.unique(movie[~hit]).size)
        notes["author"] = (
            f"first listed genre from {mpath.name}; author_id = index in GENRES {list(GENRES)}"
            + (f", extra genres {extra}" if extra else "")
            + f"; {n_missing} rated movies missing from the movies file get author 0"
        )
        uniq = np.unique(movie)
        extra_posts["title"] = np.array([titles.get(int(m), "") for m in uniq], dtype=object)
    else:
        author = np.zeros(movie.size, dtype=np.int64)
        notes["author"] = "no movies file beside the ratings: every movie has the constant author 0"
    rating = cols["rating"].astype(np.float32)
    events = {
        "user_id": cols["user"],
        "post_id": movie,
        "author_id": author.astype(np.int64),
        "timestamp": cols["ts"],
        "product_surface": np.zeros(movie.size, dtype=np.int32),
        "click": np.ones(movie.size, dtype=bool),
        "favorite": rating >= FAVORITE_MIN_RATING,
        "rating": rating,
    }
    posts = posts_from_events(movie, events["author_id"], events["timestamp"], extra=extra_posts)
    return finish(
        out,
        events,
        posts,
        ACTIONS,
        name=name or p.parent.name or "movielens",
        source=str(p),
        notes=notes,
        bad=bad,
    )
