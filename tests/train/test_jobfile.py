"""The job file's pydantic layer: typed errors naming the field, the JSON schema, the dataclasses built."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from phoenix_recsys.actions import ActionVocabulary
from phoenix_recsys.cli.main import app
from phoenix_recsys.model.config import DType
from phoenix_recsys.train.run import JobConfig

ACTIONS = ActionVocabulary.binary(["click", "like"])


@pytest.mark.parametrize("doc,message", [
    ({"optimizer": {}}, "unknown sections ['optimizer']"),
    ({"train": {"lr": 0.1, "batchsize": 3}}, "train (TrainConfig): unknown fields ['batchsize', 'lr']"),
    ({"ranker": {"stpes": 3}}, "ranker (TrainConfig): unknown fields ['stpes']"),
    ({"model": {"model": {"layers": 2}}}, "model.model (TransformerConfig): unknown fields ['layers']"),
    ({"model": {"hash_config": {"users": 2}}}, "model.hash_config (HashConfig): unknown fields ['users']"),
    ({"train": {"steps": "many"}}, "train.steps: Input should be a valid integer"),
    ({"model": {"fprop_dtype": "float7"}}, "model.fprop_dtype: Input should be 'float32' or 'bfloat16'"),
    ({"model": {"actions": ["a"]}}, "remove model.actions"),
    ({"tune": {"params": {"train.lr": {"low": 0.1, "high": 1}}}}, "search parameter 'train.lr': train has no field 'lr'"),
    ({"tune": {"params": {"train.learning_rate": {"low": 1, "high": 0.1}}}}, "low (1.0) must be < high (0.1)"),
    ({"tune": {"params": {"train.learning_rate": {"low": 1, "hi": 2}}}}, "unknown fields ['hi']"),
])
def test_bad_job_documents_name_the_field(doc, message):
    with pytest.raises(ValueError) as e:
        JobConfig.from_dict(doc)
    assert message in str(e.value)


def test_valid_document_builds_the_dataclasses():
    job = JobConfig.from_dict({"model": {"model": {"emb_size": 8, "key_size": 4, "num_layers": 1}, "fprop_dtype": "float32",
                                         "hash_config": {"user_vocab_size": 101}},
                               "train": {"steps": 7, "positive_actions": ["like"]}, "ranker": {"batch_size": 4}})
    cfg = job.model_config(ACTIONS)
    assert cfg.emb_size == 8 and cfg.model.num_layers == 1 and cfg.fprop_dtype == DType.FLOAT32
    assert cfg.hash_config.user_vocab_size == 101 and cfg.hash_config.item_vocab_size == 100_003  # code default kept
    t = job.train_config("ranker")
    assert (t.steps, t.batch_size, t.positive_actions) == (7, 4, ("like",))
    assert job.train_config("retrieval").batch_size == 64
    assert JobConfig.from_dict(job.to_dict()) == job


def test_config_schema_command_prints_the_schema():
    r = CliRunner().invoke(app, ["train", "config-schema"])
    assert r.exit_code == 0, r.output
    schema = json.loads(r.output)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"model", "train", "ranker", "retrieval", "tune"}
    train = schema["$defs"]["TrainConfig"]
    assert train["additionalProperties"] is False and "learning_rate" in train["properties"]
