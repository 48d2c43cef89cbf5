"""`phoenix-recsys reference ...`: verify parity case files and import released weights."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phoenix_recsys.cli._common import JsonFlag, console, domain_errors, print_json
from phoenix_recsys.model.reference import ModelKind, import_checkpoint
from phoenix_recsys.model.reference_cases import verify_cases

reference_app = typer.Typer(
    help=(
        "Compatibility with the released Phoenix code: check our model against parity case files "
        "(`verify`) and turn released weights into a checkpoint our engine loads (`import`)."
    ),
    no_args_is_help=True,
)


class VerifyDtype(StrEnum):
    F32 = "f32"
    BF16 = "bf16"
    BOTH = "both"


class ImportDtype(StrEnum):
    F32 = "f32"
    BF16 = "bf16"


class Variant(StrEnum):
    V1 = "v1"
    MAY = "may"


class Kind(StrEnum):
    RANKER = "ranker"
    RETRIEVAL = "retrieval"


_FPROP = {ImportDtype.F32: "float32", ImportDtype.BF16: "bfloat16"}

CasesArg = Annotated[
    Path,
    typer.Argument(
        help="Case file in the REFERENCE-LAYOUT 8 layout (npz with meta_json; sizes are read from its config).",
        exists=True, dir_okay=False,
    ),
]
VerifyDtypeOpt = Annotated[
    VerifyDtype, typer.Option("--dtype", help="Forward dtype(s) to check against the stored f32/bf16 outputs.")
]
JitOpt = Annotated[
    bool,
    typer.Option(
        "--jit/--eager",
        help="Compile the forward instead of running it eagerly. The stored outputs are eager; jitted bf16 "
        "differs from them by up to ~3e-2 (XLA fusion keeps extra precision).",
    ),
]
ParamsArg = Annotated[
    Path,
    typer.Argument(
        help="Released-layout parameter npz (keys `module/path/param`, as the May release's loader reads).",
        exists=True, dir_okay=False,
    ),
]
ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        help="CONFIG.json: either meta_json-like {\"config\": {sizes}, \"variant\": ..., \"kind\": ..., "
        "\"right_anchored_rope\": ...} or the bare size mapping (emb_size, key_size, num_layers, ...). "
        "Flags override the file; kind and variant not given anywhere are read off the parameter keys.",
        exists=True, dir_okay=False,
    ),
]
OutOpt = Annotated[
    Path, typer.Option("--out", help="Checkpoint directory to write (config.json + params.npz).", file_okay=False)
]
VariantOpt = Annotated[
    Variant | None, typer.Option("--variant", help="Release: v1 (Jan 2026) or may (May 2026).")
]
KindOpt = Annotated[Kind | None, typer.Option("--kind", help="Model kind: ranker or retrieval.")]
RopeOpt = Annotated[
    bool | None,
    typer.Option(
        "--right-anchored-rope/--per-slot-rope",
        help="Positions: the May release's right_anchored_rope, or per-slot (the release default).",
        show_default=False,
    ),
]
ImportDtypeOpt = Annotated[
    ImportDtype, typer.Option("--dtype", help="Forward dtype recorded in the checkpoint (the release serves bf16).")
]
TablesOpt = Annotated[
    Path | None,
    typer.Option(
        "--embeddings",
        help="Optional released embedding_tables.npz (user_/item_/author_embeddings [V, D]) copied into our "
        "hash tables; without it the tables are freshly initialised and only looked-up embeddings score "
        "meaningfully.",
        exists=True, dir_okay=False,
    ),
]


@reference_app.command("verify")
@domain_errors
def verify(cases: CasesArg, dtype: VerifyDtypeOpt = VerifyDtype.BOTH, jit: JitOpt = False, json_: JsonFlag = False) -> None:
    """Run our model on every case of a parity file and compare every stored output.

    Exit 0 only when every output is within the file's tolerance
    (elementwise |got - want| <= tol * max(1, |want|)); 1 otherwise or on a malformed file.
    `--json` prints {"ok", "max_abs_diff": {dtype: worst}, "cases": {case: {"<dtype>/<output>":
    {"max_abs_diff", "tolerance", "ok"}}}}, output keys named like the file's own.
    """
    report = verify_cases(cases, dtype.value, jit=jit)
    if json_:
        print_json(report.to_json())
    else:
        table = Table(title=f"{cases.name} ({'jit' if jit else 'eager'})")
        for col in ("case", "dtype", "output", "max abs diff", "tolerance", "ok"):
            # Fold (never truncate) names: a case or output name cut to "rank_strong_righ…" is ambiguous.
            table.add_column(col, justify="right" if col in ("max abs diff", "tolerance") else "left", overflow="fold")
        for c in report.checks:
            mark = "[green]ok[/]" if c.ok else f"[red]FAIL[/]{' (' + c.error + ')' if c.error else ''}"
            table.add_row(c.case, c.dtype, c.output, f"{c.max_abs_diff:.3e}", f"{c.tolerance:g}", mark)
        console.print(table)
        worst = ", ".join(f"{d} {report.max_abs_diff(d):.3e}" for d in report.dtypes)
        verdict = "[green]all outputs within tolerance[/]" if report.ok else "[red]some outputs out of tolerance[/]"
        console.print(f"largest max abs diff: {worst}; {verdict}")
    if not report.ok:
        raise typer.Exit(code=1)


def _save_to_bundle(out: Path, kind: ModelKind, model: object) -> Path:
    from phoenix_recsys.train.bundle import save_model

    return save_model(out, kind.value, model, train_config=None, result={"imported": "released layout"})


@reference_app.command("import")
@domain_errors
def import_(
    params: ParamsArg,
    config: ConfigOpt,
    out: OutOpt,
    variant: VariantOpt = None,
    kind: KindOpt = None,
    right_anchored_rope: RopeOpt = None,
    dtype: ImportDtypeOpt = ImportDtype.BF16,
    embeddings: TablesOpt = None,
    json_: JsonFlag = False,
) -> None:
    """Convert released weights into a model bundle our engine loads (`train.bundle.load_bundle`).

    The bundle holds the imported ranker or retriever; `feed`/`serve` and cached-context scoring use it
    like a trained one. Import the retriever into the same --out to get both models in one bundle.

    A missing, unexpected or mis-shaped key is refused with its name and the expected shape.
    """
    summary = import_checkpoint(
        params, config, out,
        variant=None if variant is None else variant.value,
        kind=None if kind is None else kind.value,
        right_anchored_rope=right_anchored_rope,
        fprop_dtype=_FPROP[dtype],
        embeddings_path=embeddings,
        save=_save_to_bundle,
    )
    if json_:
        print_json({"kind": summary.kind.value, "bundle": str(summary.out_dir), "variant": summary.variant.value,
                    "right_anchored_rope": summary.right_anchored_rope, "fprop_dtype": summary.fprop_dtype.value,
                    "num_params": summary.num_params, "tables_imported": summary.tables_imported})
        return
    rope = "right-anchored" if summary.right_anchored_rope else "per-slot"
    tables = "imported" if summary.tables_imported else "freshly initialised"
    console.print(
        f"wrote {summary.kind.value} into bundle {summary.out_dir} ({summary.variant.value} release, {rope} "
        f"positions, {summary.fprop_dtype.value}, {summary.num_params} parameters; hash tables {tables})",
        highlight=False,
    )
