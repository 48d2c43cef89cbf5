"""Released-code compatibility: parity case files, parameter import/export, imported checkpoints, presets."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

from phoenix_recsys.cli.reference import reference_app
from phoenix_recsys.data.batch import RecsysBatch
from phoenix_recsys.model import CachedRanker, PhoenixModel, PhoenixModelConfig, PhoenixRetrievalModel
from phoenix_recsys.model.config import DType, HistoryAttention, PositionScheme
from phoenix_recsys.model.embeddings import RecsysEmbeddings
from phoenix_recsys.model.reference import (
    ROOT,
    ModelKind,
    ReleasedVariant,
    export_params,
    import_checkpoint,
    import_params,
    infer_kind,
    infer_variant,
    load_imported,
    recipe_params,
    released_config,
    released_keys,
    released_model,
    released_spec,
)
from phoenix_recsys.model.reference_cases import CaseData, parse_dtypes, verify_cases, write_case_file
from phoenix_recsys.testing import random_batch
from phoenix_recsys.train.bundle import load_bundle

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
TOL = {"f32": 1e-5, "bf16": 3e-2}

# A non-demo size set: GQA (4 query heads on 2 kv heads), odd hash counts, 3 layers, small vocabularies.
CUSTOM = {
    "emb_size": 48,
    "key_size": 12,
    "num_q_heads": 4,
    "num_kv_heads": 2,
    "num_layers": 3,
    "widening_factor": 2,
    "attn_output_multiplier": 0.25,
    "history_seq_len": 5,
    "candidate_seq_len": 3,
    "num_actions": 7,
    "product_surface_vocab_size": 5,
    "num_user_hashes": 1,
    "num_item_hashes": 3,
    "num_author_hashes": 2,
    "user_vocab_size": 97,
    "item_vocab_size": 89,
    "author_vocab_size": 83,
    "continuous_action_hidden_dim": 16,
    "post_age_granularity_mins": 120,
}

runner = CliRunner()


def _model(cfg: PhoenixModelConfig, kind: str, seed: int, *, strong: bool = True) -> PhoenixModel | PhoenixRetrievalModel:
    """A model holding random released-layout parameters (the parity recipe; no JAX init to compile)."""
    return released_model(cfg, recipe_params(cfg, kind, seed=seed, strong=strong), kind, table_seed=seed)


def _inputs(cfg: PhoenixModelConfig, *, seed: int, batch_size: int = 3, num_candidates: int | None = None,
            may: bool = False) -> tuple[RecsysBatch, RecsysEmbeddings]:
    """A random batch (one padded candidate, ragged history) and release-style embeddings (N(0,1))."""
    batch = random_batch(cfg, batch_size, num_candidates, seed=seed, min_history=1, pad_candidates=1)
    rng = np.random.default_rng(seed + 1)
    b, s, c = batch.batch_size, batch.history_len, batch.num_candidates
    if may:
        impr = rng.integers(1_000_000, 2_000_000, (b, c)).astype(np.int32)
        created = (impr - rng.integers(0, 400_000, (b, c))).astype(np.int32)
        created[0, 0] = impr[0, 0] + 10  # negative age -> bucket 0
        created[1, 0] = 0  # unknown creation time -> bucket 0
        batch = batch._replace(
            history_continuous_actions=(rng.random((b, s, 8)) * 45.0).astype(np.float32),
            candidate_impr_ts=impr,
            candidate_post_creation_ts=created,
        )
    hc, d = cfg.hash_config, cfg.emb_size

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    emb = RecsysEmbeddings(
        user_embeddings=normal(b, hc.num_user_hashes, d),
        history_post_embeddings=normal(b, s, hc.num_item_hashes, d),
        candidate_post_embeddings=normal(b, c, hc.num_item_hashes, d),
        history_author_embeddings=normal(b, s, hc.num_author_hashes, d),
        candidate_author_embeddings=normal(b, c, hc.num_author_hashes, d),
    )
    return batch, emb


def _outputs(model: PhoenixModel | PhoenixRetrievalModel, batch: RecsysBatch, emb: RecsysEmbeddings) -> dict:
    """Every output a case file stores, computed directly (not through reference_cases)."""
    if isinstance(model, PhoenixModel):
        out = model(batch, emb)
        x, pad, _ = model.build_inputs(batch, emb)
        res = {"logits": out.logits, "input_embeddings": x, "padding_mask": pad}
        if out.continuous_preds is not None:
            res["continuous_preds"] = out.continuous_preds
    else:
        res = dict(model(batch, emb)._asdict())
    return {k: np.asarray(v if v.dtype == jnp.bool_ else v.astype(jnp.float32)) for k, v in res.items()}


def _case(variant: str, kind: str, *, rope: bool = False, seed: int = 0) -> CaseData:
    """A case of the CUSTOM sizes: a freshly built model's released-layout params and its own outputs."""
    cfg = released_config(CUSTOM, variant=variant, kind=kind, right_anchored_rope=rope)
    params = export_params(_model(cfg, kind, seed), kind)
    batch, emb = _inputs(cfg, seed=seed, may=variant == "may")
    outputs = {}
    for name, dtype in (("f32", DType.FLOAT32), ("bf16", DType.BFLOAT16)):
        model = released_model(cfg.replace(fprop_dtype=dtype), params, kind)
        outputs[name] = _outputs(model, batch, emb)
    return CaseData(kind=kind, params=params, batch=batch, embeddings=emb, outputs=outputs, right_anchored_rope=rope)


@pytest.fixture(scope="module")
def custom_cases() -> dict[str, CaseData]:
    return {
        "rank": _case("may", "ranker", seed=1),
        "rank_rightrope": _case("may", "ranker", rope=True, seed=2),
        "ret": _case("may", "retrieval", seed=3),
    }


# -- the shared parity files ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["parity_v1.npz", "parity_may.npz"])
def test_verify_shared_file_passes_in_f32_and_bf16(name: str) -> None:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    result = runner.invoke(reference_app, ["verify", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    meta = json.loads(str(np.load(path)["meta_json"]))
    assert set(report["cases"]) == set(meta["cases"])
    for case, info in meta["cases"].items():
        assert set(report["cases"][case]) == set(info["outputs"])
        for key, entry in report["cases"][case].items():
            assert entry["ok"] is True, (case, key, entry)
            assert 0.0 <= entry["max_abs_diff"] <= entry["tolerance"]
            assert set(entry["by_dtype"]) == {"f32", "bf16"}
            for dtype, sub in entry["by_dtype"].items():
                assert sub["ok"] is True and sub["tolerance"] == TOL[dtype]
                assert 0.0 <= sub["max_abs_diff"] <= sub["tolerance"]
    # Eager bf16 reproduces the release's eager bf16 bit for bit.
    assert report["max_abs_diff"]["bf16"] == 0.0
    assert report["max_abs_diff"]["f32"] < 1e-6


@pytest.mark.parametrize("name", ["parity_v1.npz", "parity_may.npz"])
def test_recipe_and_key_layout_reproduce_the_shared_parameters(name: str) -> None:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta_json"]))
    for case, info in meta["cases"].items():
        cfg = released_config(meta["config"], variant=meta["variant"], kind=info["kind"])
        ours = recipe_params(cfg, info["kind"], seed=1234 if info["kind"] == "ranker" else 4321,
                             strong="strong" in case)
        pre = f"{case}/params/"
        theirs = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
        assert ours.keys() == theirs.keys(), case
        assert infer_kind(theirs) is ModelKind(info["kind"]) and any(k.startswith(ROOT[infer_kind(theirs)]) for k in theirs)
        for k, v in theirs.items():
            np.testing.assert_array_equal(ours[k], v, err_msg=f"{case}: {k}")


# -- any size the layout allows -------------------------------------------------------------------
def test_verify_reads_sizes_from_meta_json_and_fails_on_a_perturbed_output(
    tmp_path: Path, custom_cases: dict[str, CaseData]
) -> None:
    path = write_case_file(tmp_path / "custom.npz", config=CUSTOM, variant="may", cases=custom_cases)
    report = verify_cases(path, "both")
    assert report.ok, [c for c in report.checks if not c.ok]
    assert {c.case for c in report.checks} == set(custom_cases)
    assert report.max_abs_diff("f32") == 0.0 and report.max_abs_diff("bf16") == 0.0
    # The continuous head, post-age and dwell blocks were all exercised.
    assert any(c.output == "continuous_preds" for c in report.checks)

    bad = dict(custom_cases)
    rank = custom_cases["rank"]
    logits = rank.outputs["f32"]["logits"].copy()
    logits[2, 1, 3] += 1e-3
    bad["rank"] = CaseData(
        kind=rank.kind, params=rank.params, batch=rank.batch, embeddings=rank.embeddings,
        outputs={**rank.outputs, "f32": {**rank.outputs["f32"], "logits": logits}},
    )
    bad_path = write_case_file(tmp_path / "bad.npz", config=CUSTOM, variant="may", cases=bad)
    result = runner.invoke(reference_app, ["verify", str(bad_path), "--json", "--dtype", "f32"])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False
    entry = out["cases"]["rank"]["logits"]
    assert entry["ok"] is False and entry["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert out["cases"]["rank"]["continuous_preds"]["ok"] is True
    # The table form gives the same verdict.
    table = runner.invoke(reference_app, ["verify", str(bad_path), "--dtype", "f32"])
    assert table.exit_code == 1 and "FAIL" in table.output


def test_verify_refuses_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "no_meta.npz"
    np.savez(path, x=np.zeros(3))
    result = runner.invoke(reference_app, ["verify", str(path)])
    assert result.exit_code == 1 and "meta_json" in result.output
    with pytest.raises(ValueError, match="dtype must be one of"):
        parse_dtypes("fp64")
    assert parse_dtypes("both") == ("f32", "bf16")


# -- parameter import -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant,kind", [("v1", "ranker"), ("may", "ranker"), ("may", "retrieval")])
def test_export_then_import_round_trip_is_exact(variant: str, kind: str) -> None:
    cfg = released_config(CUSTOM, variant=variant, kind=kind)
    original = _model(cfg, kind, 7)
    params = export_params(original, kind)
    assert set(params) == set(released_keys(original, kind))
    recipe = recipe_params(cfg, kind, seed=7, strong=True)
    assert all(np.array_equal(params[k], recipe[k]) for k in recipe)
    assert infer_kind(params) is ModelKind(kind)
    assert infer_variant(params, kind) is (ReleasedVariant.MAY if (variant, kind) == ("may", "ranker") else ReleasedVariant.V1)
    restored = _model(cfg, kind, 8)  # different values, overwritten by the import
    import_params(restored, params, kind)
    batch, emb = _inputs(cfg, seed=4, may=variant == "may")
    want, got = _outputs(original, batch, emb), _outputs(restored, batch, emb)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _ranker_params() -> tuple[PhoenixModelConfig, dict[str, np.ndarray]]:
    cfg = released_config(CUSTOM, variant="v1")
    return cfg, recipe_params(cfg, "ranker", seed=0)


def test_import_refuses_missing_extra_and_misshaped_keys() -> None:
    cfg, params = _ranker_params()
    model = _model(cfg, "ranker", 1)

    missing = dict(params)
    del missing["transformer/decoder_layer_2/linear_v/w"]
    with pytest.raises(ValueError, match="missing key 'transformer/decoder_layer_2/linear_v/w'") as e:
        import_params(model, missing, "ranker")
    assert "(48, 64)" in str(e.value)  # the expected shape is named

    extra = {**params, "phoenix_model/bogus_table": np.zeros((3, 48), np.float32)}
    with pytest.raises(ValueError, match="unexpected key 'phoenix_model/bogus_table'"):
        import_params(model, extra, "ranker")

    wrong = {**params, "phoenix_model/proj_mat_2": np.zeros((10, 48), np.float32)}
    with pytest.raises(ValueError, match=r"'phoenix_model/proj_mat_2' has shape \(10, 48\), expected \(288, 48\)"):
        import_params(model, wrong, "ranker")

    # The release's unused ~/log_temperature is accepted.
    import_params(model, {**params, "~/log_temperature": np.zeros((), np.float32)}, "ranker")


def test_cli_import_refuses_a_bad_key_naming_it(tmp_path: Path) -> None:
    _, params = _ranker_params()
    params["phoenix_model/unembeddings"] = np.zeros((48, 6), np.float32)
    np.savez(tmp_path / "params.npz", **params)
    (tmp_path / "config.json").write_text(json.dumps(CUSTOM))
    result = runner.invoke(
        reference_app,
        ["import", str(tmp_path / "params.npz"), "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "ck")],
    )
    assert result.exit_code == 1
    assert "phoenix_model/unembeddings" in result.output and "(48, 7)" in result.output
    assert not (tmp_path / "ck" / "bundle.json").exists()


def test_imported_ranker_scores_through_cached_ranker(tmp_path: Path) -> None:
    cfg = released_config(CUSTOM, variant="may")
    params = recipe_params(cfg, "ranker", seed=5, strong=True)
    np.savez(tmp_path / "params.npz", **params)
    meta = {"config": CUSTOM, "variant": "may", "kind": "ranker"}
    (tmp_path / "config.json").write_text(json.dumps(meta))
    out_dir = tmp_path / "ck"
    result = runner.invoke(
        reference_app,
        ["import", str(tmp_path / "params.npz"), "--config", str(tmp_path / "config.json"), "--out", str(out_dir),
         "--dtype", "f32", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "ranker" and summary["variant"] == "may" and summary["bundle"] == str(out_dir)
    model = load_bundle(out_dir).ranker
    assert isinstance(model, PhoenixModel)
    assert model.config == cfg
    assert export_params(model, "ranker").keys() == params.keys()
    for k, v in export_params(model, "ranker").items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)
    # Three candidates in chunks of two: per-slot positions need each chunk's slot offset to be right.
    batch, _ = _inputs(cfg, seed=9, may=True)
    full = np.asarray(model(batch).logits, np.float32)
    cached = CachedRanker(model, chunk_size=2).score(batch).logits
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)


def test_cli_import_bare_config_with_flags_and_embedding_tables(tmp_path: Path) -> None:
    cfg = released_config(CUSTOM, variant="v1", kind="retrieval")
    params = recipe_params(cfg, "retrieval", seed=2)
    np.savez(tmp_path / "params.npz", **params)
    (tmp_path / "config.json").write_text(json.dumps(CUSTOM))
    rng = np.random.default_rng(0)
    tables = {n: rng.standard_normal((v, 48)).astype(np.float32)
              for n, v in (("user_embeddings", 11), ("item_embeddings", 13), ("author_embeddings", 17))}
    np.savez(tmp_path / "tables.npz", **tables)
    out_dir = tmp_path / "ck"
    result = runner.invoke(
        reference_app,
        ["import", str(tmp_path / "params.npz"), "--config", str(tmp_path / "config.json"), "--out", str(out_dir),
         "--kind", "retrieval", "--variant", "v1", "--dtype", "bf16", "--embeddings", str(tmp_path / "tables.npz")],
    )
    assert result.exit_code == 0, result.output
    model = load_bundle(out_dir).retrieval
    assert isinstance(model, PhoenixRetrievalModel)
    assert model.config.fprop_dtype is DType.BFLOAT16
    assert model.config.hash_config.item_vocab_size == 13
    np.testing.assert_array_equal(np.asarray(model.tables.item[...])[1:], tables["item_embeddings"][1:])


def test_load_imported_refuses_a_checkpoint_missing_a_parameter(tmp_path: Path) -> None:
    cfg, params = _ranker_params()
    np.savez(tmp_path / "params.npz", **params)
    (tmp_path / "config.json").write_text(json.dumps(CUSTOM))
    # The library-level writer (the CLI writes a bundle instead).
    import_checkpoint(tmp_path / "params.npz", tmp_path / "config.json", tmp_path / "ck", kind="ranker")
    with np.load(tmp_path / "ck" / "params.npz") as z:
        kept = {k: z[k] for k in z.files if k != "rms_norm/scale"}
    np.savez(tmp_path / "ck" / "params.npz", **kept)
    with pytest.raises(ValueError, match="missing key 'rms_norm/scale'"):
        load_imported(tmp_path / "ck")


def test_released_spec_precedence_and_inference() -> None:
    _, params = _ranker_params()
    spec = released_spec({"config": CUSTOM, "variant": "may", "right_anchored_rope": True}, params)
    assert (spec.variant, spec.kind, spec.right_anchored_rope) == (ReleasedVariant.MAY, ModelKind.RANKER, True)
    spec = released_spec(CUSTOM, params, variant="v1", right_anchored_rope=False)
    assert (spec.variant, spec.kind, spec.right_anchored_rope) == (ReleasedVariant.V1, ModelKind.RANKER, False)
    assert released_spec(CUSTOM, params).variant is ReleasedVariant.V1  # no May-only keys
    with pytest.raises(ValueError, match="kind is not given"):
        released_spec(CUSTOM)
    with pytest.raises(ValueError, match="bare size mapping"):
        released_spec({"sizes": CUSTOM})
    with pytest.raises(ValueError, match="missing key 'key_size'"):
        released_config({k: v for k, v in CUSTOM.items() if k != "key_size"})
    with pytest.raises(ValueError, match="'num_layers' must be int"):
        released_config({**CUSTOM, "num_layers": 2.5})


# -- the released configuration differs from ours where it should --------------------------------
def _logits_after_moving_candidate(cfg: PhoenixModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Logits of candidate 0 in slot 0, and of the same candidate moved to the last slot (fp32)."""
    model = _model(cfg, "ranker", 3)
    batch, emb = _inputs(cfg, seed=11, num_candidates=4)
    order = np.array([1, 2, 3, 0])
    moved = batch.with_candidates(
        batch.candidate_post_hashes[:, order], batch.candidate_author_hashes[:, order],
        batch.candidate_product_surface[:, order],
    )
    moved_emb = emb._replace(
        candidate_post_embeddings=emb.candidate_post_embeddings[:, order],
        candidate_author_embeddings=emb.candidate_author_embeddings[:, order],
    )
    forward = nnx.jit(lambda m, b, e: m(b, e).logits)
    before = np.asarray(forward(model, batch, emb), np.float32)[:, 0]
    after = np.asarray(forward(model, moved, moved_emb), np.float32)[:, 3]
    return before, after


def test_released_config_is_slot_dependent_and_ours_is_not() -> None:
    released = released_config(CUSTOM, variant="v1")
    assert released.history_attention is HistoryAttention.CAUSAL
    assert released.positions is PositionScheme.PER_SLOT and not released.action_bias
    before, after = _logits_after_moving_candidate(released)
    assert np.abs(before - after).max() > 1e-4

    ours = PhoenixModelConfig.tiny()
    assert ours.history_attention is HistoryAttention.BIDIRECTIONAL
    assert ours.positions is PositionScheme.RIGHT_ANCHORED and ours.action_bias
    before, after = _logits_after_moving_candidate(ours)
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)


def test_may_blocks_are_off_unless_configured() -> None:
    v1 = released_config(CUSTOM, variant="v1")
    may_ret = released_config(CUSTOM, variant="may", kind="retrieval")
    for cfg in (v1, may_ret, PhoenixModelConfig.tiny()):
        assert not cfg.history_dwell_block and not cfg.post_age_buckets and cfg.continuous_head_size == 0
        assert cfg.num_ip_hashes == 0
    may = released_config({**CUSTOM, "num_ip_hashes": 2}, variant="may", right_anchored_rope=True)
    assert may.history_dwell_block and may.post_age_buckets and may.continuous_head_size == 8
    assert may.num_ip_hashes == 2 and may.positions is PositionScheme.RELEASED_RIGHT_ANCHORED
    assert may.dwell_hidden_dim == 16 and may.post_age_granularity_mins == 120

    # IP-hash embeddings are summed into the user token only when configured.
    batch, emb = _inputs(may, seed=6, may=True)
    ip = np.random.default_rng(6).standard_normal((3, 2, 48)).astype(np.float32)
    params = recipe_params(may, "ranker", seed=6, strong=True)
    with_ip = released_model(may, params, "ranker")
    without_ip = released_model(may.replace(num_ip_hashes=0), params, "ranker")
    base = np.asarray(with_ip(batch, emb).logits)
    np.testing.assert_array_equal(np.asarray(without_ip(batch, emb._replace(user_ip_embeddings=ip)).logits), base)
    assert np.abs(np.asarray(with_ip(batch, emb._replace(user_ip_embeddings=ip)).logits) - base).max() > 1e-4

