"""The ``layerinf`` command: a thin layer over the Python API, its options made from the config dataclasses.

Every stage option is a field of a dataclass in ``layerinf.config``; ``cli_options._options`` turns those fields into
typer options with the same name (``vote_kappa`` → ``--vote-kappa``), default and help text, so the CLI, the
API and the YAML cannot drift apart. Errors (bad input, usage errors, I/O problems) print one line
``error: <problem> — <fix>`` and exit with status 2; ``--debug`` or ``LAYERINF_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from layerinf.config import (SCALE_OUT, DataConfig, FilterConfig, GradsConfig, ModelConfig, RankConfig, RuntimeConfig,
                             ScoreConfig, TrainConfig, runtime_options_except)
from layerinf.cli_options import _arg, _opt, _options, given
from layerinf.errors import LayerinfError, on_sigint, quiet_lost_interrupt
from layerinf.store.layout import RunLayout, SweepLayout

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts hold brackets such as hf:NAME[/CONFIG]; print them as written
    pretty_exceptions_enable=False,
    help="Find the training examples that hurt a LoRA-fine-tuned model. Scores: HIGHER = MORE HELPFUL; "
    "filtering removes the bottom.",
)
EXIT_USAGE = 2  # bad input or usage: one line on stderr
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted: finished stages are kept; run the same command again to resume from them"


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _echo(console) -> Callable[[str], None]:
    """Progress lines as written: never folded at the terminal's width (logs stay one line per message)."""
    return lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------ options


def command(name: str, fixed: list[inspect.Parameter], sections: tuple[type, ...] = (), *,
            exclude: set[str] = frozenset(), presets: dict[str, Any] | None = None) -> Callable:
    """Register ``fn(**kwargs)`` as a subcommand whose options are ``fixed`` plus the sections' fields."""

    def decorator(fn: Callable) -> Callable:
        params = [*fixed, *_options(*sections, exclude=exclude, presets=presets)]
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        fn.option_defaults = {p.name: p.default.default for p in params  # type: ignore[attr-defined]
                              if isinstance(p.default, typer.models.OptionInfo)}
        app.command(name)(fn)
        return fn

    return decorator


FORCE = _opt("force", bool, False, "Redo the stage even if it finished.")
# suspects and advise: their stages' runtime options but the Ray ones; suspects: of the score section only κ
WORKFLOW_EXCLUDE = {"noise_rate", "noise_rates"} | SCALE_OUT | runtime_options_except("finetune", "grads", "score")
NOT_KAPPA = {f.name for f in dataclasses.fields(ScoreConfig)} - {"vote_kappa"}


# ------------------------------------------------------------------------------------------------ commands


@command("prepare", [_arg("run_dir", Path, "Run directory to create or reuse."), FORCE], (DataConfig,))
def prepare(run_dir: Path, force: bool = False, **kwargs):
    """Load --source (your data, or `demo`), split it into train / influence / test, flip a share of training labels."""
    from layerinf.api import prepare as run_prepare

    data = run_prepare(run_dir, force=force, **given(prepare, kwargs))
    _console().print(f"data → {run_dir}/data: train {len(data.train)} ({int(data.train['noisy'].sum())} noisy), "
                     f"influence {len(data.infl)}, test {len(data.test)}; labels {list(data.label_names)}",
                     markup=False, highlight=False)


@command("finetune", [_arg("run_dir", Path, "Run directory (after `layerinf prepare`)."), FORCE],
         (ModelConfig, TrainConfig, RuntimeConfig), exclude=runtime_options_except("finetune"))
def finetune(run_dir: Path, force: bool = False, **kwargs):
    """LoRA-fine-tune the model on the noisy training split; keep init / best-influence-loss / last adapters."""
    from layerinf.api import finetune as run_finetune
    from layerinf.terminal import print_table

    out = run_finetune(run_dir, force=force, **given(finetune, kwargs))
    print_table(out.history, title=f"fine-tuning {kwargs['model']} (best influence-loss epoch: {out.best_epoch})")
    _console().print(f"adapters → {out.folder}", markup=False, highlight=False)
    from layerinf.api import health_warning

    warning = health_warning(run_dir)
    if warning:
        _echo(_console())(f"WARNING: {warning}")


@command("grads", [_arg("run_dir", Path, "Run directory (after `layerinf finetune`)."), FORCE],
         (GradsConfig, RuntimeConfig), exclude=runtime_options_except("grads"))
def grads(run_dir: Path, force: bool = False, **kwargs):
    """Per-sample gradients of every module (LoRA q/v A and B per layer, WE, head) for train and influence sets."""
    from layerinf.api import grads as run_grads

    train, infl = run_grads(run_dir, force=force, **given(grads, kwargs))
    _console().print(f"gradients → {run_dir}/grads: {train.n} train and {infl.n} influence samples, "
                     f"{len(train.modules)} modules ({train.dtype})", markup=False, highlight=False)


@command("score", [_arg("run_dir", Path, "Run directory (after `layerinf grads`)."),
                   _opt("top", int, 20, "Rows of the printed summary."), FORCE], (ScoreConfig, RuntimeConfig),
         exclude=runtime_options_except("score"))
def score(run_dir: Path, top: int = 20, force: bool = False, **kwargs):
    """Influence scores for every method × layer group × aggregator; NDR / AUC / cancellation table."""
    from layerinf.api import score as run_score
    from layerinf.terminal import print_table

    notes: list[str] = []  # what was kept or restored, then "current score set: …; kept: …" (store/score_sets.py)
    table = run_score(run_dir, force=force, echo=notes.append, **given(score, kwargs))
    say = _echo(_console())
    for note in notes[:-1]:
        say(note)
    cols = [c for c in ("method", "group", "aggregator", "ndr_30", "precision_30", "auc_ndr", "roc_auc",
                        "cancellation") if c in table.columns]
    from layerinf.api import health_warning

    warning = health_warning(run_dir)
    if warning:  # before and after the table: these scores come from a model that did not learn
        say(f"WARNING: {warning}")
    print_table(table[cols].head(top), title="configurations by NDR@30 (random = 0.30; scores: higher = more helpful)")
    say(f"full table → {RunLayout(run_dir).scores(ext='csv')}")
    say(notes[-1])
    if warning:
        say(f"WARNING: {warning}")


def _parse_set(values: list[str]) -> dict:
    import yaml

    out = {}
    for item in values or []:
        if "=" not in item:
            raise LayerinfError(f"--set needs KEY=VALUE, got '{item}'", "e.g. --set data.seed=3")
        key, value = item.split("=", 1)
        if not key.strip():
            raise LayerinfError(f"--set needs KEY=VALUE, got '{item}'", "e.g. --set data.seed=3")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise LayerinfError(f"--set {key}: cannot read the value '{value}'", "quote it or fix it") from None
    return out


def _results_by_config(results):
    """One row per retrained configuration, best first; with ``filter.repeats`` > 1 the accuracies are the
    means over the repeats (column ``repeats``)."""
    keys = ["method", "group", "aggregator"]
    cols = keys + ["ndr_30", "removed", "best_accuracy", "accuracy_at_best_epoch"]
    if "repeat" in results.columns and results["repeat"].nunique() > 1:
        grouped = results.groupby(keys, sort=False, dropna=False)
        table = grouped[["ndr_30", "removed"]].first().join(
            grouped[["best_accuracy", "accuracy_at_best_epoch"]].mean()).join(grouped.size().rename("repeats"))
        results, cols = table.reset_index(), cols + ["repeats"]
    return results.sort_values("best_accuracy", ascending=False, kind="stable")[cols]


@command("retrain", [_arg("run_dir", Path, "Run directory (after `layerinf score`)."), FORCE],
         (FilterConfig, RuntimeConfig), exclude={"retrain"} | runtime_options_except("retrain"))
def retrain(run_dir: Path, force: bool = False, **kwargs):
    """Filter and retrain (the paper's experiment): remove the bottom fraction by each configuration and baseline,
    retrain from the same start with the fine-tuning recipe, compare test accuracy."""
    from layerinf.api import retrain as run_retrain
    from layerinf.terminal import print_table

    say = _echo(_console())
    results = run_retrain(run_dir, force=force, echo=say, **given(retrain, kwargs))
    print_table(_results_by_config(results),
                title="after removing the bottom and retraining (test accuracy; NDR@30 random = 0.30)")
    say(f"results → {RunLayout(run_dir).results('csv')} · next: layerinf report {run_dir}")


@command("run", [_arg("config", Path, "Experiment YAML (see examples/)."),
                 _opt("out", Optional[Path], None, "Run directory (default: runs/<name>)."),
                 _opt("set_", list[str], [], "Override a config field: --set data.seed=3 (repeatable).", "--set")],
         (RuntimeConfig,))
def run(config: Path, out: Optional[Path] = None, set_: list[str] = (), **kwargs):
    """The whole experiment: noise → fine-tune → gradients → scores → filter & retrain → results table."""
    from layerinf.api import run as run_experiment
    from layerinf.config import ExperimentConfig
    from layerinf.terminal import print_table

    overrides = _parse_set(list(set_))
    overrides.update({f"runtime.{k}": v for k, v in given(run, kwargs).items()})  # runtime options given here win
    cfg = ExperimentConfig.from_yaml(config).with_overrides(overrides)
    out = out or Path("runs") / cfg.name
    console = _console()
    results = run_experiment(cfg, out, echo=_echo(console))
    if len(results):
        print_table(_results_by_config(results),
                    title="after removing the bottom and retraining (test accuracy; NDR@30 random = 0.30)")
    console.print(f"results → {RunLayout(out).results('csv')} · next: layerinf report {out}", markup=False,
                  highlight=False)


@command("sweep", [_arg("config", Path, "Base experiment YAML."),
                   _opt("grid", list[str], ..., "KEY=V1,V2,... e.g. --grid data.seed=0,1,2 (repeatable)."),
                   _opt("out", Path, Path("runs/sweep"), "Sweep directory."),
                   _opt("workers", int, 1, "Worker processes (units in parallel) with --executor local.")],
         (RuntimeConfig,))
def sweep(config: Path, grid: list[str], out: Path = Path("runs/sweep"), workers: int = 1, **kwargs):
    """Run an experiment over a grid of config values (models × tasks × seeds ...), one tidy results table."""
    import yaml

    from layerinf.api import sweep as run_sweep

    parsed = {}
    for item in grid:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise LayerinfError(f"--grid needs KEY=V1,V2, got '{item}'", "e.g. --grid data.seed=0,1,2")
        key, values = item.split("=", 1)
        try:
            parsed[key.strip()] = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
        except yaml.YAMLError:
            raise LayerinfError(f"--grid {key}: cannot read the values '{values}'",
                                "give plain comma-separated values, e.g. --grid data.seed=0,1,2") from None
        if not parsed[key.strip()]:
            raise LayerinfError(f"--grid {key} has no values", "e.g. --grid data.seed=0,1,2")
    console = _console()
    results = run_sweep(config, parsed, out, workers=workers, echo=_echo(console),
                        **given(sweep, kwargs))
    if len(results):
        done = f"{len(results)} result rows from {results['unit'].nunique()} units → {SweepLayout(out).results('csv')}"
    else:  # detection only (filter.retrain: false): the units' scores are the results
        done = "no retraining results (with filter.retrain: false the units are only scored: OUT/<unit>/scores)"
    console.print(f"{done} · next: layerinf report {out}", markup=False, highlight=False)


@command("report", [_arg("path", Path, "A run or sweep directory."),
                    _opt("out", Optional[Path], None, "Output folder (default: PATH/report)."),
                    _opt("tau", float, 0.75, "Pareto threshold τ."),
                    _opt("include_self", bool, False, "Win rate divides by |C| (the paper's code) instead of |C|-1."),
                    _opt("bootstrap", int, 1000, "Bootstrap resamples for the NDR@30 / AUC intervals (0: none)."),
                    _opt("bootstrap_seed", int, 0, "Seed of the bootstrap resamples.")])
def report(path: Path, out: Optional[Path] = None, tau: float = 0.75, include_self: bool = False,
           bootstrap: int = 1000, bootstrap_seed: int = 0):
    """The paper's tables (win rate, Pareto rank, Spearman, Wilcoxon), figures and one HTML page."""
    from layerinf.api import report as make_report

    html = make_report(path, out=out, tau=tau, include_self=include_self, bootstrap=bootstrap,
                       bootstrap_seed=bootstrap_seed)
    _console().print(f"report → {html}", markup=False, highlight=False)


def _suspects_fixed() -> list[inspect.Parameter]:
    return [
        _arg("out", Path, "Output folder."),
        _opt("run", Optional[Path], None, "Reuse a layerinf run directory (its data and gradients) instead of "
             "--source."),
        _opt("adapter", Optional[Path], None, "A trained adapter (layerinf .safetensors or PEFT folder); without "
             "it the model is fine-tuned first."),
        FORCE,
    ]


def _suspects_presets():
    from layerinf.workflows.defaults import SUSPECTS_DEFAULTS

    return {**SUSPECTS_DEFAULTS, "source": None}


@command("suspects", _suspects_fixed(), (DataConfig, ModelConfig, TrainConfig, RankConfig, ScoreConfig, RuntimeConfig),
         exclude=WORKFLOW_EXCLUDE | NOT_KAPPA, presets=_suspects_presets())
def suspects(out: Path, run: Optional[Path] = None, adapter: Optional[Path] = None, force: bool = False, **kwargs):
    """Rank YOUR training examples by how likely they are mislabeled or harmful (no noise mask needed)."""
    from layerinf.api import suspects as find
    from layerinf.terminal import print_table
    from layerinf.workflows.suspects import summary_table

    res = find(out, source=kwargs.get("source"), run=run, adapter=adapter, force=force,
               **given(suspects, kwargs, "source"))
    say = _echo(_console())
    for warning in res.health:  # before the table, where they cannot be missed
        say(f"WARNING: {warning}")
    print_table(summary_table(res, k=10), title="most suspicious training examples (lowest scores)")
    say(res.coverage_text)
    if res.detection:
        d = res.detection
        say(f"ranking: {d['ranking']} ({d['why']})")
        h = d.get("oos_health")
        if h:  # the folds judged together: a fold's own warning above may come from too few held-out rows
            say(f"fold models on all {h['n']:,} rows, out of sample: accuracy {h['accuracy']:.3f} (95 % CI "
                f"{h['ci95'][0]:.3f}–{h['ci95'][1]:.3f}) vs {h['majority']:.3f} for the majority class"
                + ("" if d.get("learned") else " — not clearly learned"))
        say(f"{res.n_suspects:,} of {res.n:,} rows flagged: {d['flagged_by']}")
    else:
        say(f"{res.n_suspects:,} of {res.n:,} ranked rows flagged by {res.method}/{res.group}/{res.aggregator}")
    if res.mask_known:
        say(f"known noise mask: NDR@30 = {res.ndr_30:.4g} (random = 0.3), AUC-NDR = {res.auc_ndr:.4g}")
    say(f"all ranked rows → {res.csv}; page → {res.html}")


@command("demo", [_opt("out", Optional[Path], None, "Run directory (default: runs/demo, runs/demo-sft)."),
                  _opt("epochs", Optional[int], None, "Fine-tuning epochs (default: the demo config's)."),
                  _opt("sft", bool, False, "The instruction-tuning demo (examples/demo-sft.yaml: SmolLM2-135M-"
                       "Instruct, loss on the response tokens)."),
                  _opt("device", str, "auto", "auto | cpu | cuda | cuda:N | mps.")])
def demo(out: Optional[Path] = None, epochs: Optional[int] = None, sft: bool = False, device: str = "auto"):
    """The embedded demo: noisy built-in reviews → LoRA (MiniLM; --sft: SmolLM2 instruction tuning) → gradients →
    scores → filter & retrain → report."""
    from importlib import resources

    import pandas as pd

    from layerinf.api import report as make_report
    from layerinf.api import run as run_experiment
    from layerinf.config import ExperimentConfig
    from layerinf.terminal import print_table

    name = "demo-sft.yaml" if sft else "demo.yaml"
    cfg = ExperimentConfig.from_yaml(str(resources.files("layerinf") / "examples" / name))
    cfg = cfg.with_overrides({"runtime.device": device, **({"train.epochs": epochs} if epochs is not None else {})})
    out = out or Path("runs") / cfg.name
    console = _console()
    results = run_experiment(cfg, out, echo=_echo(console))
    layout = RunLayout(out)
    print_table(pd.read_parquet(layout.history()), title="fine-tuning on the noisy demo data (per epoch)")
    table = pd.read_parquet(layout.scores())
    cols = ["method", "group", "aggregator", "ndr_30", "auc_ndr", "cancellation"]
    shown = table[cols] if sft else table[cols].head(12)  # the SFT demo lists every configuration
    print_table(shown, title=f"{'every configuration' if sft else 'best configurations'} by NDR@30 (random = 0.30)")
    print_table(_results_by_config(results),
                title=f"remove the bottom {cfg.filter.fraction:.0%}, retrain from the same start: test accuracy")
    html = make_report(out)
    console.print(f"report: {html.resolve()}", markup=False, highlight=False)
    from layerinf.store.layout import ANSWER_FILE

    answer = html.parent / ANSWER_FILE  # the conclusion, last (the report's first screen)
    if answer.is_file():
        console.print("\nWhat this run found:\n" + answer.read_text(encoding="utf-8").strip(), markup=False,
                      highlight=False, soft_wrap=True)


def _advise_presets():
    from layerinf.workflows.defaults import ADVISE_DEFAULTS

    return {**ADVISE_DEFAULTS, "source": None}


@command("advise", [_arg("out", Path, "Output folder (the page: OUT/advise/index.html)."),
                    _opt("probe_rate", float, 0.1, "Share of the training labels flipped (instruction data: responses replaced) per "
                           "probe, in (0, 0.5]."),
                    _opt("probes", int, 3, "Probes: each one fine-tuning + one gradient pass (2 or more give a 95 % "
                         "interval; with 2 or more they are cross-fitting folds: each trains on (probes − 1)/probes "
                         "of your rows)."),
                    _opt("noise_folds", Optional[int], None, "Noise-rate estimate: default, from the probes' own "
                         "cross-fitted models (no extra fine-tuning; with --probes 1: 2 separate fold runs); K ≥ 2: "
                         "K separate fold runs on your labels alone; 0: skip (κ stays --vote-kappa; instruction "
                         "data: no estimate)."),
                    _opt("kappa_factor", float, 1.5, "Vote's κ for your data = clip(factor × estimated noise rate, "
                         "0.05, 0.5)."),
                    _opt("criterion", str, "ndr_30", "Planted-flip metric that picks: ndr_30 | ndr_10 | auc_ndr | "
                         "roc_auc."),
                    FORCE],
         (DataConfig, ModelConfig, TrainConfig, GradsConfig, ScoreConfig, RuntimeConfig),
         exclude=WORKFLOW_EXCLUDE, presets=_advise_presets())
def advise(out: Path, probe_rate: float = 0.1, probes: int = 3, noise_folds: Optional[int] = None, kappa_factor: float = 1.5,
           criterion: str = "ndr_30", force: bool = False, **kwargs):
    """Which layers to trust on YOUR data: plant label flips, score every configuration, recommend one (and κ)."""
    from layerinf.api import advise as run_advise
    from layerinf.terminal import print_table

    console = _console()
    res = run_advise(out, source=kwargs.get("source"), probe_rate=probe_rate, probes=probes, noise_folds=noise_folds,
                     kappa_factor=kappa_factor, criterion=criterion, force=force,
                     echo=_echo(console), **given(advise, kwargs, "source"))
    cols = ["rank", "method", "group", "aggregator", f"{criterion}_mean", f"{criterion}_low", f"{criterion}_high",
            "auc_ndr_mean"]
    print_table(res.table[[c for c in cols if c in res.table.columns]].head(12),
                title=f"configurations by planted {criterion} (mean, 95 % CI over probes)")
    rc = res.rank_config
    console.print(f"recommended: {rc['method']}/{rc['group']}/{rc['aggregator']}, --vote-kappa {rc['vote_kappa']:.2f}"
                  f" · page → {res.html}", markup=False, highlight=False)


# ------------------------------------------------------------------------------------------------ entry point


def _click_kind(exc: BaseException) -> str | None:
    """'usage' / 'exit' / 'abort' for click's exceptions and typer's vendored copies alike (by class name)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "ClickException" in names:
        return "usage"
    if "Exit" in names and hasattr(exc, "exit_code"):
        return "exit"
    if "Abort" in names:
        return "abort"
    return None


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def _interrupted() -> None:
    """Ctrl-C: one line, status 130. A stage writes into a temporary folder that is removed on the way out, so
    only finished stages remain, and the same command run again reuses them."""
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; every failure is one line on stderr and a non-zero exit (no traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("LAYERINF_DEBUG", "") not in ("", "0") or "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not sys.stderr.isatty():  # piped or logged: no Hugging Face progress bars between our lines
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not debug and "LAYERINF_LOG" not in os.environ:  # the Hub's retry chatter (offline, a wrong name) is not
        for var in ("HF_HUB_VERBOSITY", "DATASETS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):  # ours to print: the
            os.environ.setdefault(var, "error")  # failure becomes one line of our own
    logging.basicConfig(level=os.environ.get("LAYERINF_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    if (threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread, and
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):  # a caller's own handler stays
        signal.signal(signal.SIGINT, on_sigint)  # a Ctrl-C swallowed by a destructor is raised again (errors.py)
        sys.unraisablehook = quiet_lost_interrupt  # … and is not printed as a traceback where it was swallowed
    try:
        code = app(args=args, standalone_mode=False, prog_name="layerinf")
    except LayerinfError as exc:
        if debug:
            raise
        _fail(str(exc))
    except KeyboardInterrupt:  # before typer runs a command (while importing, parsing)
        _interrupted()
    except Exception as exc:  # noqa: BLE001 — the one place that turns every failure into one line
        kind = _click_kind(exc)
        if kind == "exit":
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if kind == "abort":
            _fail("aborted", 1)
        if kind == "usage":
            cmd = getattr(getattr(exc, "ctx", None), "command_path", "layerinf")
            _fail(f"{exc.format_message()} — see `{cmd} --help`", getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)  # type: ignore[attr-defined]
        if debug:
            raise
        if isinstance(exc, BrokenPipeError):  # `layerinf report … | head`: the reader left; nothing to say
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            except (OSError, ValueError, AttributeError):
                pass
            sys.exit(1)
        if isinstance(exc, MemoryError):
            _fail("out of memory — use a smaller --batch-size / --grad-batch-size or --max-train")
        if isinstance(exc, OSError):
            _fail(f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''} — check the path and "
                  "permissions (LAYERINF_DEBUG=1 shows the traceback)")
        _fail(f"unexpected {type(exc).__name__}: {exc} — this is a bug in layerinf; rerun with --debug and report "
              "the traceback")
    else:  # typer turns Ctrl-C inside a command into Exit(130) and, with standalone_mode=False, returns it
        if code == EXIT_INTERRUPTED:
            _interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)


if __name__ == "__main__":
    main()
