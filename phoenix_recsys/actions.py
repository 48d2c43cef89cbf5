"""Action vocabularies: which engagements a dataset records and a model predicts (SPEC 1)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class ActionKind(enum.StrEnum):
    """How an action is observed: a yes/no event or a non-negative quantity."""

    BINARY = "binary"
    CONTINUOUS = "continuous"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One engagement type.

    Attributes:
      name: identifier used in columns, APIs and `p_<name>` views (lower snake case).
      kind: binary -> the ranker predicts a sigmoid probability; continuous -> a softplus value.
      negative: a negative-feedback action (block, mute, report ...): informational, used by
        default weights and reports, never by the model itself.
    """

    name: str
    kind: ActionKind = ActionKind.BINARY
    negative: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"Action.name must be non-empty lower snake case, got {self.name!r}")
        if not isinstance(self.kind, ActionKind):
            try:
                object.__setattr__(self, "kind", ActionKind(self.kind))
            except ValueError:
                raise ValueError(
                    f"Action.kind for {self.name!r} must be 'binary' or 'continuous', got {self.kind!r}"
                ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class ActionVocabulary:
    """An ordered, named set of actions; the order fixes the action axis `A` of every tensor.

    The vocabulary is data: a dataset declares it (see `to_json` / `from_json`) and models, losses,
    metrics and the API all follow that declaration.

    >>> vocab = ActionVocabulary.phoenix()
    >>> len(vocab), vocab.index("reply"), vocab["dwell_time"].kind.value
    (19, 1, 'continuous')
    """

    actions: tuple[Action, ...]

    def __post_init__(self) -> None:
        if not self.actions:
            raise ValueError("ActionVocabulary.actions must hold at least one action")
        names = [a.name for a in self.actions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"ActionVocabulary.actions has duplicate names: {dupes}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def phoenix(cls) -> ActionVocabulary:
        """The 19 Phoenix actions, in the released order (18 binary, then dwell_time continuous)."""
        negative = {"not_interested", "block_author", "mute_author", "report"}
        acts = [Action(name=n, negative=n in negative) for n in PHOENIX_BINARY_ACTIONS]
        acts.append(Action(name="dwell_time", kind=ActionKind.CONTINUOUS))
        return cls(tuple(acts))

    @classmethod
    def binary(cls, names: Iterable[str], negative: Iterable[str] = ()) -> ActionVocabulary:
        """A vocabulary of binary actions with the given names (handy for importers and tests)."""
        neg = set(negative)
        return cls(tuple(Action(name=n, negative=n in neg) for n in names))

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> ActionVocabulary:
        """Inverse of `to_json`; raises ValueError naming the bad entry."""
        if not isinstance(data, Sequence) or isinstance(data, str | bytes):
            raise ValueError(f"actions must be a list of {{name, kind}} objects, got {type(data).__name__}")
        acts = []
        for i, entry in enumerate(data):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise ValueError(f"actions[{i}] must be an object with a 'name', got {entry!r}")
            acts.append(
                Action(
                    name=str(entry["name"]),
                    kind=entry.get("kind", "binary"),
                    negative=bool(entry.get("negative", False)),
                )
            )
        return cls(tuple(acts))

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-ready description: a list of `{name, kind, negative}`."""
        return [{"name": a.name, "kind": a.kind.value, "negative": a.negative} for a in self.actions]

    # -- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self):
        return iter(self.actions)

    def __getitem__(self, name: str) -> Action:
        return self.actions[self.index(name)]

    def __contains__(self, name: object) -> bool:
        return any(a.name == name for a in self.actions)

    @property
    def names(self) -> tuple[str, ...]:
        """Action names in axis order."""
        return tuple(a.name for a in self.actions)

    def index(self, name: str) -> int:
        """Position of `name` on the action axis; ValueError listing the known names otherwise."""
        for i, a in enumerate(self.actions):
            if a.name == name:
                return i
        raise ValueError(f"unknown action {name!r}; this vocabulary has {list(self.names)}")

    def binary_mask(self) -> tuple[bool, ...]:
        """True where the action is binary (sigmoid head), False where continuous (softplus head)."""
        return tuple(a.kind is ActionKind.BINARY for a in self.actions)

    @property
    def binary_indices(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.actions) if a.kind is ActionKind.BINARY)

    @property
    def continuous_indices(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.actions) if a.kind is ActionKind.CONTINUOUS)


PHOENIX_BINARY_ACTIONS: tuple[str, ...] = (
    "favorite",
    "reply",
    "repost",
    "photo_expand",
    "click",
    "profile_click",
    "vqv",
    "share",
    "share_via_dm",
    "share_via_copy_link",
    "dwell",
    "quote",
    "quoted_click",
    "follow_author",
    "not_interested",
    "block_author",
    "mute_author",
    "report",
)

PHOENIX_ACTIONS: ActionVocabulary = ActionVocabulary.phoenix()


# Production weights of the weighted score (SPEC 7); feature-switch defaults, overridable at run time.
# dwell_time is per second of predicted dwell.
DEFAULT_ACTION_WEIGHTS: dict[str, float] = {
    "favorite": 0.5,
    "reply": 5.0,
    "repost": 1.0,
    "photo_expand": 0.05,
    "click": 0.4,
    "profile_click": 0.0,
    "vqv": 0.05,
    "share": 2.0,
    "share_via_dm": 5.0,
    "share_via_copy_link": 20.0,
    "dwell": 0.0,
    "quote": 5.0,
    "quoted_click": 0.05,
    "follow_author": 4.0,
    "not_interested": -43.2,
    "block_author": -31.2,
    "mute_author": -58.8,
    "report": -234.0,
    "dwell_time": 0.004,
}


def weight_vector(vocab: ActionVocabulary, weights: dict[str, float] | None = None) -> tuple[float, ...]:
    """Per-action weights in `vocab` order.

    With `weights=None`, Phoenix action names take their production weight and any other action (an
    imported dataset's own vocabulary) takes +1 if binary positive, -1 if negative, 0 if continuous,
    so the weighted score stays meaningful. An explicit mapping must name only known actions;
    unnamed actions then get 0.
    """
    if weights is None:
        out = []
        for a in vocab:
            if a.name in DEFAULT_ACTION_WEIGHTS:
                out.append(DEFAULT_ACTION_WEIGHTS[a.name])
            elif a.kind is ActionKind.CONTINUOUS:
                out.append(0.0)
            else:
                out.append(-1.0 if a.negative else 1.0)
        return tuple(out)
    unknown = sorted(set(weights) - set(vocab.names))
    if unknown:
        raise ValueError(f"weights name actions not in the vocabulary: {unknown}; known: {list(vocab.names)}")
    return tuple(float(weights.get(n, 0.0)) for n in vocab.names)
