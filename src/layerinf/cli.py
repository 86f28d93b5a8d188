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

from .errors import LayerinfError

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
    """Print a DataFrame as a rich table."""
    table = Table(title=title, show_lines=False)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fiu" else "left")
    for _, row in df.iterrows():
        table.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row.tolist()])
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
    from .api import prepare as run_prepare

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
    from .api import finetune as run_finetune

    out = run_finetune(
        run_dir, model=model, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, seed=seed,
        trust_remote_code=trust_remote_code, force=force,
    )
    print_table(out.history, title=f"fine-tuning {model} (best influence-loss epoch: {out.best_epoch})")
    console.print(f"adapters → {out.folder}")


# --------------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory for the demo."),
    epochs: int = typer.Option(3, help="Fine-tuning epochs."),
):
    """The embedded demo: noisy built-in data → MiniLM LoRA fine-tune → per-epoch table."""
    from .api import finetune as run_finetune
    from .api import prepare as run_prepare

    data = run_prepare(out, source="demo", noise_rate=0.2, seed=0)
    console.print(f"demo data: train {len(data.train)} ({int(data.train['noisy'].sum())} flipped), "
                  f"influence {len(data.infl)}, test {len(data.test)}")
    res = run_finetune(out, model="minilm", epochs=epochs)
    print_table(res.history, title=f"MiniLM LoRA on noisy demo data (best influence-loss epoch {res.best_epoch})")
    console.print(f"run directory: {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning LayerinfError into one line on stderr and exit status 2."""
    logging.basicConfig(level=os.environ.get("LAYERINF_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except LayerinfError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
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
