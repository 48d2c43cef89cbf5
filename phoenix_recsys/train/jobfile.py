"""The job file (`--config job.json`) as pydantic models: typed validation, unknown-field errors that
name the field, and a JSON schema (`phoenix-recsys train config-schema`).

The model code keeps its frozen dataclasses (`PhoenixModelConfig`, `TransformerConfig`, `HashConfig`,
`TrainConfig`); the pydantic sections here are generated from those dataclasses' fields, so the two
cannot drift apart, and they only check the file. `JobConfig` (train/run.py) then builds the
dataclasses from the validated values, whose own `__post_init__` checks cross-field rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)

from phoenix_recsys.hashing import HashConfig
from phoenix_recsys.model.config import PhoenixModelConfig, TransformerConfig
from phoenix_recsys.train.loop import TrainConfig

SECTIONS = ("model", "train", "ranker", "retrieval", "tune")
_FORBID = ConfigDict(extra="forbid")


def _section(cls: type, *, skip: tuple[str, ...] = (), nested: dict[str, type[BaseModel]] | None = None,
             doc: str = "") -> type[BaseModel]:
    """A pydantic model with `cls`'s dataclass fields, each optional (absent = the code's default)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = (nested or {}).get(f.name, hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        fields[f.name] = (tp | None, Field(default=None, description=f"default: {default!r}"
                                           if not isinstance(default, BaseModel) else None))
    return create_model(cls.__name__, __config__=_FORBID, __doc__=doc or cls.__doc__, **fields)


TransformerSection = _section(TransformerConfig)
HashSection = _section(HashConfig)
ModelSection = _section(PhoenixModelConfig, skip=("actions",),
                        nested={"model": TransformerSection, "hash_config": HashSection},
                        doc="PhoenixModelConfig fields; the action vocabulary comes from the dataset.")
TrainSection = _section(TrainConfig)


class FloatRange(BaseModel):
    """A numeric search range: uniform in [low, high], or log-uniform with `log`."""

    model_config = _FORBID
    low: float
    high: float
    log: bool = False
    int: bool = Field(False, description="draw integers (e.g. layer counts)")

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Choices(BaseModel):
    """A categorical search dimension."""

    model_config = _FORBID
    choices: list[Any] = Field(min_length=1)


def _dim_kind(v: Any) -> str:
    return "choices" if isinstance(v, dict | Choices) and (isinstance(v, Choices) or "choices" in v) else "range"


# Tagged by whether "choices" is present, so an error names the one shape meant, not both.
SearchDim = Annotated[Annotated[FloatRange, Tag("range")] | Annotated[Choices, Tag("choices")],
                      Discriminator(_dim_kind)]


class TuneSection(BaseModel):
    """`phoenix-recsys tune`: which model to train per trial, the metric to optimise, the search space.

    `params` maps a dotted job-file path (`train.learning_rate`, `model.model.num_layers`,
    `ranker.token_dropout`) to a range or a list of choices.
    """

    model_config = _FORBID
    kind: Literal["ranker", "retrieval"] = "ranker"
    metric: str | None = Field(None, description="validation metric (default: the model's selection metric)")
    direction: Literal["maximize", "minimize"] = "maximize"
    params: dict[str, SearchDim] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _paths(self) -> TuneSection:
        sections = {"model": ModelSection, "train": TrainSection, "ranker": TrainSection, "retrieval": TrainSection}
        for path in self.params:
            head, *rest = path.split(".")
            if head not in sections or not rest:
                raise ValueError(f"search parameter {path!r} must be section.field with section model, train, "
                                 "ranker or retrieval")
            model: Any = sections[head]
            for i, name in enumerate(rest):
                if not isinstance(model, type) or name not in model.model_fields:
                    raise ValueError(f"search parameter {path!r}: {'.'.join([head, *rest[:i]])} has no field {name!r}")
                model = {"model": TransformerSection, "hash_config": HashSection}.get(name) if head == "model" else None
        return self


JobFile = create_model(
    "JobFile", __config__=_FORBID,
    __doc__="A training job file: every section optional; unknown sections and fields are errors.",
    model=(ModelSection | None, None), train=(TrainSection | None, None), ranker=(TrainSection | None, None),
    retrieval=(TrainSection | None, None), tune=(TuneSection | None, None),
)


def job_schema() -> dict[str, Any]:
    """The job file's JSON schema."""
    return JobFile.model_json_schema()


_CLASS_AT = {("model",): "PhoenixModelConfig", ("model", "model"): "TransformerConfig",
             ("model", "hash_config"): "HashConfig", ("train",): "TrainConfig", ("ranker",): "TrainConfig",
             ("retrieval",): "TrainConfig"}


def _message(err: ValidationError, where: str, raw: Any) -> str:
    """One line naming the fields, keeping the wording of the earlier hand-written checks."""
    extra = [e["loc"] for e in err.errors() if e["type"] == "extra_forbidden"]
    if extra:
        top = sorted(str(loc[0]) for loc in extra if len(loc) == 1)
        if top:
            return f"{where}: unknown sections {top} (allowed: {', '.join(SECTIONS)})"
        parent = tuple(x for x in extra[0][:-1] if x not in ("range", "choices"))
        names = sorted(str(loc[-1]) for loc in extra if loc[:-1] == extra[0][:-1])
        cls = _CLASS_AT.get(tuple(map(str, parent[:2])), _CLASS_AT.get((str(parent[0]),), "tune"))
        return f"{where}: {'.'.join(map(str, parent))} ({cls}): unknown fields {names}"
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"] if str(x) not in ("range", "choices"))
        msg = e["msg"].removeprefix("Value error, ")
        shown = "input" in e and e["type"] not in ("missing", "model_type", "value_error")
        parts.append(f"{loc or 'file'}: {msg}" + (f" (got {e['input']!r})" if shown else ""))
    return f"{where}: " + "; ".join(parts)


def validate_job(data: Any, where: str = "job config") -> dict[str, dict[str, Any]]:
    """Validate a parsed job file; returns {section: given fields} in JSON form (absent fields left out).

    Raises:
      ValueError: naming the section and field that is wrong.
    """
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict) and "actions" in data["model"]:
        raise ValueError("the action vocabulary comes from the dataset's manifest; remove model.actions")
    try:
        job = JobFile.model_validate(data)
    except ValidationError as e:
        raise ValueError(_message(e, where, data)) from None
    out = job.model_dump(mode="json", exclude_unset=True)
    return {s: out.get(s) or {} for s in SECTIONS}


def load_job_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read and validate a JSON job file (see `validate_job`)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {path} is not valid JSON: {e}") from None
    return validate_job(data, f"config file {path}")
