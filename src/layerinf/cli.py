"""The ``layerinf`` command: a thin layer over the Python API (one subcommand per stage)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from layerinf.errors import LayerinfError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find the training examples that hurt a LoRA-fine-tuned model. Scores: HIGHER = MORE HELPFUL; "
    "filtering removes the bottom.",
)
console = Console(stderr=False)
err_console = Console(stderr=True)


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def print_table(df, title: str | None = None, floatfmt: str = "{:.4f}") -> None:
    """Print a DataFrame as a rich table (floats to 4 decimals, integers as integers)."""
    table = Table(title=title, show_lines=False)
    kinds = [df[c].dtype.kind for c in df.columns]
    for col, kind in zip(df.columns, kinds):
        table.add_column(str(col), justify="right" if kind in "fiu" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*[floatfmt.format(v) if kind == "f" else str(v) for v, kind in zip(row, kinds)])
    console.print(table)


# --------------------------------------------------------------------------------------------- prepare


@app.command()
def prepare(
    run_dir: Path = typer.Argument(..., help="Run directory to create or reuse."),
    source: str = typer.Option("demo", help="demo | a GLUE task folder | a CSV/TSV/JSONL file | hf:NAME[/CONFIG]."),
    task: Optional[str] = typer.Option(None, help="GLUE task name when SOURCE is the GLUE root folder."),
    text_column: Optional[str] = typer.Option(None, help="Text column (CSV/TSV/JSONL/hf)."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column for pair tasks."),
    label_column: Optional[str] = typer.Option(None, help="Label column."),
    dev_source: Optional[str] = typer.Option(None, help="Separate labelled dev file (else carved from SOURCE)."),
    max_train: int = typer.Option(4500, help="Cap on training examples (stratified)."),
    max_dev: int = typer.Option(1000, help="Cap on dev examples, split 50/50 into influence and test sets."),
    noise_rate: float = typer.Option(0.2, help="Fraction of training labels to flip, in [0, 1)."),
    seed: int = typer.Option(0, help="Seed for sampling, splitting and noise."),
    force: bool = typer.Option(False, help="Redo the stage even if it finished."),
):
    """Load data, split it into train / influence / test, and flip a fraction of training labels."""
    from layerinf.api import prepare as run_prepare

    data = run_prepare(
        run_dir, source=source, task=task, text_column=text_column, text_pair_column=text_pair_column,
        label_column=label_column, dev_source=dev_source, max_train=max_train, max_dev=max_dev,
        noise_rate=noise_rate, seed=seed, force=force,
    )
    console.print(
        f"[bold]data[/] → {run_dir}/data: train {len(data.train)} ({int(data.train['noisy'].sum())} noisy), "
        f"influence {len(data.infl)}, test {len(data.test)}; labels {list(data.label_names)}"
    )


# --------------------------------------------------------------------------------------------- finetune


@app.command()
def finetune(
    run_dir: Path = typer.Argument(..., help="Run directory (after `layerinf prepare`)."),
    model: str = typer.Option("minilm", help="minilm | smollm2-135m | a local folder | a Hub id."),
    epochs: int = typer.Option(10, help="Epochs (paper: 10)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: per built-in, else 3e-4)."),
    batch_size: int = typer.Option(32, help="Batch size (paper: 32)."),
    max_length: int = typer.Option(128, help="Truncation length in tokens."),
    lora_r: int = typer.Option(4, help="LoRA rank."),
    lora_alpha: int = typer.Option(4, help="LoRA alpha."),
    lora_dropout: float = typer.Option(0.05, help="LoRA dropout."),
    seed: Optional[int] = typer.Option(None, help="Training seed (default: the data seed)."),
    trust_remote_code: bool = typer.Option(False, help="Allow custom model code from the Hub."),
    force: bool = typer.Option(False, help="Redo the stage even if it finished."),
):
    """LoRA-fine-tune the model on the noisy training split; keep init / best-influence-loss / last adapters."""
    from layerinf.api import finetune as run_finetune

    out = run_finetune(
        run_dir, model=model, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, seed=seed,
        trust_remote_code=trust_remote_code, force=force,
    )
    print_table(out.history, title=f"fine-tuning {model} (best influence-loss epoch: {out.best_epoch})")
    console.print(f"adapters → {out.folder}")


# --------------------------------------------------------------------------------------------- grads


@app.command()
def grads(
    run_dir: Path = typer.Argument(..., help="Run directory (after `layerinf finetune`)."),
    checkpoint: str = typer.Option("best", help="init | best (lowest influence loss) | last."),
    dtype: str = typer.Option("float32", help="Storage dtype: float32 | float16 | bfloat16."),
    batch_size: int = typer.Option(32, help="Samples per forward/backward."),
    we: bool = typer.Option(True, "--we/--no-we", help="Also store row-sparse word-embedding gradients."),
    force: bool = typer.Option(False, help="Redo the stage even if it finished."),
):
    """Per-sample gradients of every module (LoRA q/v A and B per layer, WE, head) for train and influence sets."""
    from layerinf.api import grads as run_grads

    train, infl = run_grads(run_dir, checkpoint=checkpoint, dtype=dtype, batch_size=batch_size, include_we=we,
                            force=force)
    console.print(f"gradients → {run_dir}/grads: {train.n} train and {infl.n} influence samples, "
                  f"{len(train.modules)} modules ({train.dtype})")


# --------------------------------------------------------------------------------------------- score


@app.command()
def score(
    run_dir: Path = typer.Argument(..., help="Run directory (after `layerinf grads`)."),
    methods: str = typer.Option("tracin,cosine,datainf", help="Comma-separated: tracin, cosine, datainf."),
    groups: Optional[str] = typer.Option(None, help="Comma-separated groups (default: WE, 4 attention groups, CL, all); "
                                         "also query_A…value_B, L03, module names, globs."),
    aggregators: str = typer.Option("mean,rank,vote", help="Comma-separated: mean, rank, vote."),
    kappa: float = typer.Option(0.30, help="Vote's κ as a fraction of n."),
    use_correct: Optional[bool] = typer.Option(None, "--correct-only/--all-validation",
                                               help="Validation filter (default: Mean all, Rank/Vote correct only)."),
    tie_method: str = typer.Option("min", help="Rank ties: min | average | ordinal."),
    group_mode: str = typer.Option("per_module", help="per_module (paper) | concat (TracIn/Cosine)."),
    datainf_threshold: int = typer.Option(100_000, help="Skip DataInf on modules with at least this many parameters."),
    compute_dtype: str = typer.Option("float32", help="float32 | bfloat16 (faster, ~1e-3 rel. error)."),
    cancellation_norm: str = typer.Option("l1", help="l1 | l2 | l1_l2."),
    top: int = typer.Option(20, help="Rows of the printed summary."),
    force: bool = typer.Option(False, help="Redo the stage even if it finished."),
):
    """Influence scores for every method × layer group × aggregator; NDR / AUC / cancellation table."""
    from layerinf.api import score as run_score

    table = run_score(
        run_dir, methods=_csv(methods), groups=_csv(groups), aggregators=_csv(aggregators), vote_kappa=kappa,
        use_correct=use_correct, tie_method=tie_method, group_mode=group_mode, datainf_threshold=datainf_threshold,
        compute_dtype=compute_dtype, cancellation_norm=cancellation_norm, force=force,
    )
    cols = [c for c in ("method", "group", "aggregator", "ndr_30", "precision_30", "auc_ndr", "roc_auc",
                        "cancellation") if c in table.columns]
    print_table(table[cols].head(top), title="configurations by NDR@30 (random = 0.30; scores: higher = more helpful)")
    console.print(f"full table → {run_dir}/scores/table.csv")


# --------------------------------------------------------------------------------------------- run / sweep


def _parse_set(values: list[str]) -> dict:
    import yaml

    out = {}
    for item in values or []:
        if "=" not in item:
            raise LayerinfError(f"--set needs KEY=VALUE, got '{item}'", "e.g. --set data.seed=3")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment YAML (see examples/)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<name>)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set data.seed=3 (repeatable)."),
):
    """The whole experiment: noise → fine-tune → gradients → scores → filter & retrain → results table."""
    from layerinf.api import run as run_experiment
    from layerinf.config import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(config).with_overrides(_parse_set(set_))
    out = out or Path("runs") / cfg.name
    results = run_experiment(cfg, out, echo=console.print)
    if len(results):
        cols = ["method", "group", "aggregator", "ndr_30", "auc_ndr", "removed", "best_accuracy",
                "accuracy_at_best_epoch"]
        shown = results.sort_values("best_accuracy", ascending=False, kind="stable")[cols]
        print_table(shown, title="after removing the bottom and retraining (test accuracy; NDR@30 random = 0.30)")
    console.print(f"results → {out}/eval/results.csv · next: layerinf report {out}")


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="Base experiment YAML."),
    grid: list[str] = typer.Option(..., "--grid", help="KEY=V1,V2,... e.g. --grid data.seed=0,1,2 (repeatable)."),
    out: Path = typer.Option(Path("runs/sweep"), help="Sweep directory."),
    workers: int = typer.Option(1, help="Worker processes (units in parallel)."),
):
    """Run an experiment over a grid of config values (models × tasks × seeds ...), one tidy results table."""
    import yaml

    from layerinf.api import sweep as run_sweep

    parsed = {}
    for item in grid:
        if "=" not in item:
            raise LayerinfError(f"--grid needs KEY=V1,V2, got '{item}'", "e.g. --grid data.seed=0,1,2")
        key, values = item.split("=", 1)
        parsed[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    results = run_sweep(config, parsed, out, workers=workers, echo=console.print)
    console.print(f"{len(results)} result rows from {results['unit'].nunique() if len(results) else 0} units "
                  f"→ {out}/results.csv · next: layerinf report {out}")


# --------------------------------------------------------------------------------------------- report


@app.command()
def report(
    path: Path = typer.Argument(..., help="A run or sweep directory."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: PATH/report)."),
    tau: float = typer.Option(0.75, help="Pareto threshold τ."),
    include_self: bool = typer.Option(False, help="Win rate divides by |C| (the paper's code) instead of |C|-1."),
):
    """The paper's tables (win rate, Pareto rank, Spearman, Wilcoxon), figures and one HTML page."""
    from layerinf.api import report as make_report

    html = make_report(path, out=out, tau=tau, include_self=include_self)
    console.print(f"report → {html}")


# --------------------------------------------------------------------------------------------- suspects


@app.command()
def suspects(
    out: Path = typer.Argument(..., help="Output folder."),
    source: Optional[str] = typer.Option(None, help="Your data: a CSV/TSV/JSONL file, GLUE folder, hf:NAME or demo."),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Reuse a layerinf run directory instead of --source."),
    model: str = typer.Option("minilm", help="Base model (built-in, folder or Hub id)."),
    adapter: Optional[Path] = typer.Option(None, help="A trained adapter (layerinf .safetensors or PEFT folder); "
                                           "without it the model is fine-tuned first."),
    method: str = typer.Option("datainf", help="tracin | cosine | datainf."),
    group: Optional[str] = typer.Option(None, help="Layer group (default: the second attention group)."),
    aggregator: str = typer.Option("vote", help="mean | rank | vote."),
    kappa: float = typer.Option(0.30, help="Vote's κ."),
    top: float = typer.Option(0.30, help="Fraction flagged as suspects."),
    epochs: int = typer.Option(3, help="Fine-tuning epochs when no adapter is given."),
    text_column: Optional[str] = typer.Option(None, help="Text column."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column."),
    label_column: Optional[str] = typer.Option(None, help="Label column."),
    dev_source: Optional[str] = typer.Option(None, help="Labelled dev file (else carved from --source)."),
    seed: int = typer.Option(0, help="Seed."),
):
    """Rank YOUR training examples by how likely they are mislabeled or harmful (no noise mask needed)."""
    from layerinf.api import suspects as find
    from layerinf.workflows.suspects import summary_table

    res = find(out, source=source, run=run_dir, model=model, adapter=adapter, method=method, group=group,
               aggregator=aggregator, kappa=kappa, top=top, epochs=epochs, text_column=text_column,
               text_pair_column=text_pair_column, label_column=label_column, dev_source=dev_source, seed=seed)
    print_table(summary_table(res, k=10), title="most suspicious training examples (lowest scores)")
    console.print(f"{res.n_suspects} of {res.n} training examples flagged by {res.method}/{res.group}/{res.aggregator}")
    if res.mask_known:
        console.print(f"known noise mask: NDR@30 = {res.ndr_30:.3f} (random = 0.30), AUC-NDR = {res.auc_ndr:.3f}")
    console.print(f"all ranked examples → {res.csv}; page → {res.html}")


# --------------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory for the demo."),
    epochs: Optional[int] = typer.Option(None, help="Fine-tuning epochs (default: the demo config's 3)."),
):
    """The embedded demo: noisy built-in reviews → MiniLM LoRA → gradients → scores → filter & retrain → report."""
    from importlib import resources

    import pandas as pd

    from layerinf.api import report as make_report
    from layerinf.api import run as run_experiment
    from layerinf.config import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(str(resources.files("layerinf") / "examples" / "demo.yaml"))
    if epochs is not None:
        cfg = cfg.with_overrides({"train.epochs": epochs})
    results = run_experiment(cfg, out, echo=console.print)
    ft = pd.read_parquet(out / "finetune" / "history.parquet")
    print_table(ft, title="fine-tuning on the noisy demo data (per epoch)")
    table = pd.read_parquet(out / "scores" / "table.parquet")
    cols = ["method", "group", "aggregator", "ndr_30", "auc_ndr", "cancellation"]
    print_table(table[cols].head(12), title="best configurations by NDR@30 (random = 0.30)")
    cols = ["method", "group", "aggregator", "ndr_30", "removed", "best_accuracy", "accuracy_at_best_epoch"]
    print_table(results.sort_values("best_accuracy", ascending=False, kind="stable")[cols],
                title="remove the bottom 30 %, retrain from the same start: test accuracy")
    html = make_report(out)
    console.print(f"[bold]report:[/] {html.resolve()}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning LayerinfError into one line on stderr and exit status 2."""
    logging.basicConfig(level=os.environ.get("LAYERINF_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except LayerinfError as exc:
        err_console.print(f"error: {exc}", style="bold red", soft_wrap=True, highlight=False, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished stages are kept and a rerun resumes")
        sys.exit(130)
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
