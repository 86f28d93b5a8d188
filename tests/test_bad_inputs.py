"""Bad input through the REAL console script (a subprocess of the installed `layerinf`), for every command.

Each case runs in its own workspace folder (a copy of a shared tiny run in the state the case needs, or
nothing) and checks what a user sees and what is left behind:

* a non-zero exit status (2: bad input), no traceback;
* exactly one stderr line, ``error: <problem> — <fix>``, matching the case's pattern;
* the workspace byte for byte as it was (relative paths + file contents): a failed command writes nothing,
  and a finished run it was pointed at is untouched.

The cases run a few at a time in worker threads (each one is its own process); the tiny run they copy is made
once per module. ``test_battery_size`` keeps the battery at 60 distinct cases or more, over every command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from helpers import COMMANDS, TINY, flip_byte, one_error_line, run_cli, run_cli_audited, snapshot

pytestmark = pytest.mark.slow

# the shared run: helpers.TINY on 60 examples, prepare → finetune → grads → score, no retraining (the report
# shows detection only)
DETECTION_ONLY = {**TINY, "data": {**TINY["data"], "max_train": 60},
                  "grads": {"include_we": False}, "runtime": {"grad_batch_size": 32},
                  "score": {"methods": ["tracin"], "groups": ["02-03", "CL"], "aggregators": ["mean"]},
                  "filter": {"retrain": False}}
CONFIG = ("name: c\ndata: {source: demo, max_train: 40, max_dev: 20}\nmodel: {max_length: 24}\n"
          "train: {epochs: 1, batch_size: 16}\nscore: {methods: [tracin], groups: [CL], aggregators: [mean]}\n"
          "filter: {configs: [tracin/CL/mean], baselines: [none]}\n")
WORKERS = 3  # cases at once (each a process; most of their time is start-up)


# ------------------------------------------------------------------------------------------------ the cases


def _stale(stage: str) -> Callable[[Path], None]:
    """Make ``stage`` look redone since its downstream stages were made (its fingerprint changes)."""

    def setup(run: Path) -> None:
        info_path = run / stage / "stage.json"
        info = json.loads(info_path.read_text())
        info["config_hash"] = "0" * 16
        info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    setup.desc = f"stale {stage}"
    return setup


def _drop_summary(stage: str) -> Callable[[Path], None]:
    """Remove the summary from ``stage``'s stage.json, as a hand edit would (its checksums still match)."""

    def setup(run: Path) -> None:
        info_path = run / stage / "stage.json"
        info = json.loads(info_path.read_text())
        del info["summary"]
        info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    setup.desc = f"drop {stage}'s summary"
    return setup


def _legacy_eval(run: Path) -> None:
    """The retrain stage as an older layerinf wrote it: eval/ (and no retrain/)."""
    (run / "eval").mkdir()
    (run / "eval" / "stage.json").write_text(json.dumps({"stage": "eval", "files": {}, "config": {
        "filter": {"fraction": 0.3, "retrain": True, "configs": ["tracin/CL/mean"], "baselines": ["none"]}}}))


_legacy_eval.desc = "legacy eval"


def _flip(rel: str) -> Callable[[Path], None]:
    def setup(run: Path) -> None:
        path = next(iter(sorted(run.glob(rel))))
        flip_byte(path)

    setup.desc = f"flip {rel}"
    return setup


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    match: str  # a regular expression the error line must match (case-insensitive)
    state: str = "new"  # the run folder ws/run: new (absent) | prepared | finetuned | graded | finished
    setup: Callable[[Path], None] | None = None  # applied to ws/run after the copy (corruptions)
    code: int = 2


def C(id, args, match, state="new", setup=None, code=2) -> Case:  # noqa: N802 — a table row
    return Case(id, tuple(args.split()) if isinstance(args, str) else tuple(args), match, state, setup, code)


CASES = [
    # ---- prepare
    C("prepare-noise-rate-1", "prepare {run} --noise-rate 1", r"noise_rate = 1\.0 is out of range"),
    C("prepare-noise-rate-abc", "prepare {run} --noise-rate abc", r"noise-rate.*(valid|number)"),
    C("prepare-max-train-0", "prepare {run} --max-train 0", r"max_train = 0 is out of range"),
    C("prepare-max-dev-1", "prepare {run} --max-dev 1", r"max_dev = 1 is out of range"),
    C("prepare-seed-negative", "prepare {run} --seed -1", r"seed = -1 is out of range"),
    C("prepare-missing-csv", "prepare {run} --source {in}/none.csv", r"none\.csv.*not found"),
    C("prepare-csv-without-label", "prepare {run} --source {in}/nolabel.csv --text-column text",
      r"label"),
    C("prepare-csv-wrong-label-column", "prepare {run} --source {in}/train.csv --label-column y", r"'y'"),
    C("prepare-csv-wrong-text-column", "prepare {run} --source {in}/train.csv --text-column body", r"'body'"),
    C("prepare-empty-csv", "prepare {run} --source {in}/empty.csv", r"empty"),
    C("prepare-binary-file", "prepare {run} --source {in}/binary.csv", r"binary|UTF-8"),
    C("prepare-folder-as-dev-file", "prepare {run} --source {in}/train.csv --dev-source {in}/adir",
      r"adir"),
    C("prepare-empty-folder-as-source", "prepare {run} --source {in}/adir", r"adir"),
    C("prepare-dev-label-unknown", "prepare {run} --source {in}/train.csv --dev-source {in}/dev_unknown.csv",
      r"neutral"),
    C("prepare-single-class", "prepare {run} --source {in}/oneclass.csv", r"class"),
    C("prepare-label-names-count", "prepare {run} --source {in}/train.csv --label-names a,b,c", r"label"),
    C("prepare-run-is-a-file", "prepare {ws}/afile", r"afile is a file"),
    C("prepare-run-inside-a-file", "prepare {ws}/afile/sub", r"afile is a file"),
    C("prepare-unknown-option", "prepare {run} --epochs 1", r"no such option"),
    C("prepare-finished-run-missing-csv", "prepare {run} --source {in}/none.csv --force", r"not found",
      state="finished"),
    # ---- finetune
    C("finetune-epochs-abc", "finetune {run} --epochs abc", r"epochs.*(valid|integer)", state="prepared"),
    C("finetune-epochs-0", "finetune {run} --epochs 0", r"epochs = 0 is out of range", state="prepared"),
    C("finetune-max-length-0", "finetune {run} --max-length 0", r"max_length = 0 is out of range",
      state="prepared"),
    C("finetune-precision-fp64", "finetune {run} --precision fp64", r"precision: unknown value 'fp64'",
      state="prepared"),
    C("finetune-lr-0", "finetune {run} --lr 0", r"lr = 0\.0 is out of range", state="prepared"),
    C("finetune-warmup-1", "finetune {run} --warmup 1", r"warmup = 1\.0 is out of range", state="prepared"),
    C("finetune-fp16-on-cpu", "finetune {run} --precision fp16 --device cpu", r"fp16 is not supported on CPU",
      state="prepared"),
    C("finetune-quantization-8bit-on-cpu", "finetune {run} --quantization 8bit --device cpu",
      r"quantization 8bit needs a CUDA GPU.*--device cuda", state="prepared"),
    C("finetune-quantization-4bit-on-cpu", "finetune {run} --quantization 4bit --device cpu",
      r"quantization 4bit needs a CUDA GPU.*layerinf\[quant\]", state="prepared"),
    C("finetune-quantization-3bit", "finetune {run} --quantization 3bit", r"quantization: unknown value '3bit'",
      state="prepared"),
    C("finetune-lora-r-0", "finetune {run} --lora-r 0", r"lora_r = 0 is out of range", state="prepared"),
    C("finetune-device-gpu", "finetune {run} --device gpu", r"unknown device 'gpu'", state="prepared"),
    C("finetune-device-cuda-no-gpu", "finetune {run} --device cuda", r"no CUDA GPU", state="prepared"),
    C("finetune-model-misspelled", "finetune {run} --model minlm", r"unknown model 'minlm'.*did you mean 'minilm'",
      state="prepared"),
    C("finetune-model-missing-folder", "finetune {run} --model ./no/such/model", r"does not exist",
      state="prepared"),
    C("finetune-before-prepare", "finetune {run}", r"stage 'data' has not finished.*layerinf prepare"),
    C("finetune-run-is-a-file", "finetune {ws}/afile", r"afile is a file"),
    C("finetune-corrupted-data", "finetune {run}", r"train\.parquet is corrupted.*layerinf prepare",
      state="prepared", setup=_flip("data/train.parquet")),
    # ---- grads
    C("grads-checkpoint-final", "grads {run} --checkpoint final", r"checkpoint: unknown value 'final'",
      state="finetuned"),
    C("grads-grad-dtype-int8", "grads {run} --grad-dtype int8", r"grad_dtype: unknown value 'int8'",
      state="finetuned"),
    C("grads-batch-size-0", "grads {run} --grad-batch-size 0", r"grad_batch_size = 0 is out of range",
      state="finetuned"),
    C("grads-extra-argument", "grads {run} --include-we abc", r"unexpected extra argument", state="finetuned"),
    C("grads-device-cuda-1", "grads {run} --device cuda:1", r"no CUDA GPU|does not exist", state="finetuned"),
    C("grads-tracin-checkpoint-final", "grads {run} --tracin-checkpoints best,final",
      r"unknown checkpoint 'final'", state="finetuned"),
    C("grads-before-finetune", "grads {run}", r"stage 'finetune' has not finished.*layerinf finetune",
      state="prepared"),
    C("grads-corrupted-adapter", "grads {run}", r"best\.safetensors is corrupted.*layerinf finetune .* --force",
      state="finetuned", setup=_flip("finetune/best.safetensors")),
    C("grads-stale-finetune", "grads {run}", r"made from an older 'data' stage.*layerinf finetune",
      state="finetuned", setup=_stale("data")),
    # ---- score
    C("score-vote-kappa-2", "score {run} --vote-kappa 2", r"vote_kappa = 2\.0 is out of range", state="graded"),
    C("score-vote-kappa-0", "score {run} --vote-kappa 0", r"vote_kappa = 0\.0 is out of range", state="graded"),
    C("score-method-unknown", "score {run} --methods influence", r"methods: unknown value 'influence'",
      state="graded"),
    C("score-aggregator-unknown", "score {run} --aggregators median", r"aggregators: unknown value 'median'",
      state="graded"),
    C("score-tie-method", "score {run} --tie-method random", r"tie_method: unknown value", state="graded"),
    C("score-compute-dtype", "score {run} --compute-dtype float16", r"compute_dtype: unknown value",
      state="graded"),
    C("score-top-abc", "score {run} --top abc", r"top.*(valid|integer)", state="graded"),
    C("score-group-unknown", "score {run} --groups nope --force", r"unknown layer group 'nope'", state="finished"),
    C("score-tracin-cp-without-checkpoints", "score {run} --methods tracin,tracin_cp",
      r"tracin_cp needs gradients at several checkpoints.*--tracin-checkpoints", state="graded"),
    C("score-before-grads", "score {run}", r"stage 'grads' has not finished.*layerinf grads", state="finetuned"),
    C("score-corrupted-gradients", "score {run}", r"L02\.query\.A\.npy is corrupted.*layerinf grads .* --force",
      state="graded", setup=_flip("grads/train/L02.query.A.npy")),
    C("score-corrupted-data", "score {run}", r"test\.parquet is corrupted.*layerinf prepare",
      state="graded", setup=_flip("data/test.parquet")),
    C("score-stale-grads", "score {run}", r"made from an older 'finetune' stage.*layerinf grads",
      state="graded", setup=_stale("finetune")),
    C("score-grads-summary-removed", "score {run}",
      r"stage 'grads' in .* is broken: its stage\.json summary has no 'num_layers' — redo it: `layerinf grads .* --force`",
      state="graded", setup=_drop_summary("grads")),
    C("score-run-missing", "score {ws}/nothing", r"stage 'data' has not finished"),
    C("score-device-gpu", "score {run} --device gpu", r"unknown device 'gpu'", state="graded"),
    C("score-chunk-size-0", "score {run} --chunk-size 0", r"chunk_size = 0 is out of range", state="graded"),
    C("score-grad-batch-size", "score {run} --grad-batch-size 8", r"no such option", state="graded"),
    # ---- retrain
    C("retrain-before-score", "retrain {run}", r"stage 'scores' has not finished.*layerinf score", state="graded"),
    C("retrain-run-missing", "retrain {ws}/nothing", r"stage 'data' has not finished"),
    C("retrain-fraction-1", "retrain {run} --fraction 1", r"fraction = 1\.0 is out of range", state="finished"),
    C("retrain-repeats-0", "retrain {run} --repeats 0", r"repeats = 0 is out of range", state="finished"),
    C("retrain-configs-unscored", "retrain {run} --configs datainf/02-03/vote",
      r"unscored configuration\(s\) datainf/02-03/vote", state="finished"),
    C("retrain-configs-not-a-key", "retrain {run} --configs datainf-02-03-vote", r"not method/group/aggregator",
      state="finished"),
    C("retrain-baseline-misspelled", "retrain {run} --baselines none,oracel", r"did you mean 'oracle'",
      state="finished"),
    C("retrain-no-retrain", "retrain {run} --no-retrain", r"no such option", state="finished"),
    C("retrain-chunk-size", "retrain {run} --chunk-size 8", r"no such option", state="finished"),
    C("retrain-device-gpu", "retrain {run} --device gpu", r"unknown device 'gpu'", state="finished"),
    C("retrain-device-cuda-no-gpu", "retrain {run} --device cuda", r"no CUDA GPU", state="finished"),
    C("retrain-corrupted-scores", "retrain {run}", r"aggregated\.parquet is corrupted.*layerinf score",
      state="finished", setup=_flip("scores/aggregated.parquet")),
    C("retrain-stale-scores", "retrain {run}", r"made from an older 'grads' stage.*layerinf score",
      state="finished", setup=_stale("grads")),
    # ---- advise
    C("advise-no-source", "advise {ws}/out", r"source"),
    # ---- run
    C("run-config-missing", "run {in}/none.yaml", r"none\.yaml does not exist"),
    C("run-config-is-a-list", "run {in}/list.yaml", r"must be a mapping"),
    C("run-config-invalid-yaml", "run {in}/broken.yaml", r"not valid YAML"),
    C("run-config-unknown-section", "run {in}/section.yaml", r"unknown key\(s\) nope"),
    C("run-config-unknown-key", "run {in}/key.yaml", r"unknown key\(s\) epoch.*did you mean 'epochs'"),
    C("run-config-name-traversal", "run {in}/traversal.yaml", r"not a plain folder name"),
    C("run-config-binary", "run {in}/binary.csv", r"not valid YAML|mapping"),
    C("run-config-folder", "run {in}/adir", r"does not exist"),
    C("run-set-epochs-abc", "run {in}/c.yaml --set train.epochs=abc", r"train\.epochs must be a whole number"),
    C("run-set-without-equals", "run {in}/c.yaml --set train.epochs", r"--set needs KEY=VALUE"),
    C("run-set-unknown-field", "run {in}/c.yaml --set train.epoch=2", r"unknown config field.*did you mean"),
    C("run-set-kappa-above-1", "run {in}/c.yaml --set score.vote_kappa=1.5", r"vote_kappa = 1\.5 is out of range"),
    C("run-set-moved-speed-key", "run {in}/c.yaml --set grads.grad_batch_size=8",
      r"grads\.grad_batch_size moved to runtime\.grad_batch_size"),
    C("run-set-fraction-0", "run {in}/c.yaml --set filter.fraction=0", r"fraction = 0\.0 is out of range"),
    C("run-set-noise-rate-1", "run {in}/c.yaml --set data.noise_rate=1", r"noise_rate = 1\.0 is out of range"),
    C("run-set-max-length-0", "run {in}/c.yaml --set model.max_length=0", r"max_length = 0 is out of range"),
    C("run-set-method-unknown", "run {in}/c.yaml --set score.methods=[tracn]", r"did you mean 'tracin'"),
    C("run-set-aggregator-unknown", "run {in}/c.yaml --set score.aggregators=[avg]", r"aggregators: unknown"),
    C("run-set-checkpoint", "run {in}/c.yaml --set grads.checkpoint=final", r"checkpoint: unknown value"),
    C("run-set-grad-dtype", "run {in}/c.yaml --set grads.grad_dtype=half", r"grad_dtype: unknown value"),
    C("run-set-precision", "run {in}/c.yaml --set model.precision=fp8", r"precision: unknown value"),
    C("run-fp16-on-cpu", "run {in}/c.yaml --set model.precision=fp16 --device cpu", r"fp16 is not supported"),
    C("run-set-model-misspelled", "run {in}/c.yaml --set model.name=minlm", r"did you mean 'minilm'"),
    C("run-set-group-unknown", "run {in}/c.yaml --set score.groups=[nope]", r"unknown layer group 'nope'"),
    C("run-set-filter-config-unscored", "run {in}/c.yaml --set filter.configs=[cosine/CL/mean]",
      r"not among the scored"),
    C("run-set-missing-csv", "run {in}/c.yaml --set data.source={in}/none.csv", r"not found"),
    C("run-device-gpu", "run {in}/c.yaml --device gpu", r"unknown device 'gpu'"),
    C("run-device-cuda-no-gpu", "run {in}/c.yaml --device cuda", r"no CUDA GPU"),
    C("run-out-is-a-file", "run {in}/c.yaml --out {ws}/afile", r"afile is a file"),
    C("run-out-inside-a-file", "run {in}/c.yaml --out {ws}/afile/sub", r"afile is a file"),
    C("run-finished-run-bad-epochs", "run {in}/c.yaml --out {run} --set train.epochs=0",
      r"epochs = 0 is out of range", state="finished"),
    C("run-finished-run-bad-model", "run {in}/c.yaml --out {run} --set model.name=minlm", r"did you mean",
      state="finished"),
    # ---- sweep
    C("sweep-workers-0", "sweep {in}/c.yaml --grid data.seed=0,1 --out {ws}/sw --workers 0", r"workers"),
    C("sweep-grid-without-equals", "sweep {in}/c.yaml --grid data.seed --out {ws}/sw", r"--grid needs KEY=V1"),
    C("sweep-grid-unknown-field", "sweep {in}/c.yaml --grid data.sed=0,1 --out {ws}/sw",
      r"unknown config field 'data\.sed'"),
    C("sweep-grid-bad-value", "sweep {in}/c.yaml --grid train.epochs=1,0 --out {ws}/sw",
      r"epochs = 0 is out of range"),
    C("sweep-grid-model-misspelled", "sweep {in}/c.yaml --grid model.name=minilm,minlm --out {ws}/sw",
      r"did you mean 'minilm'"),
    C("sweep-grid-missing", "sweep {in}/c.yaml --out {ws}/sw", r"missing option '--grid'"),
    C("sweep-out-is-a-file", "sweep {in}/c.yaml --grid data.seed=0,1 --out {ws}/afile", r"afile is a file"),
    C("sweep-every-unit-fails", "sweep {in}/c.yaml --grid data.source={in}/none.csv,{in}/gone.csv --out {ws}/sw",
      r"2 of 2 sweep units failed.*none\.csv.*not found"),
    C("sweep-config-missing", "sweep {in}/none.yaml --grid data.seed=0,1 --out {ws}/sw", r"does not exist"),
    # ---- report
    C("report-empty-folder", "report {ws}/empty", r"no results|no score"),
    C("report-missing-folder", "report {ws}/nothing", r"nothing does not exist"),
    C("report-file", "report {ws}/afile", r"afile is a file"),
    C("report-tau-2", "report {run} --tau 2", r"tau = 2\.0 is out of range", state="finished"),
    C("report-tau-abc", "report {run} --tau abc", r"tau.*(valid|number)", state="finished"),
    C("report-out-is-a-file", "report {run} --out {ws}/afile", r"afile is a file", state="finished"),
    C("report-corrupted-score-table", "report {run}", r"table\.parquet is corrupted.*layerinf score .* --force",
      state="finished", setup=_flip("scores/table.parquet")),
    C("report-corrupted-gradients", "report {run}", r"L00\.value\.B\.npy is corrupted.*layerinf grads",
      state="finished", setup=_flip("grads/infl/L00.value.B.npy")),
    C("report-corrupted-adapter", "report {run}", r"best\.safetensors is corrupted.*layerinf finetune",
      state="finished", setup=_flip("finetune/best.safetensors")),
    C("report-stale-scores", "report {run}", r"made from an older 'grads' stage.*layerinf score",
      state="finished", setup=_stale("grads")),
    C("report-legacy-eval", "report {run}", r"eval was made by an older layerinf version.*layerinf retrain .*"
      r"--configs tracin/CL/mean --baselines none", state="finished", setup=_legacy_eval),
    # ---- suspects
    C("suspects-source-and-run", "suspects {ws}/out --source demo --run {run}", r"not both", state="finished"),
    C("suspects-neither-source-nor-run", "suspects {ws}/out", r"exactly one of"),
    C("suspects-adapter-missing", "suspects {ws}/out --source demo --adapter {in}/none.safetensors",
      r"none\.safetensors does not exist"),
    C("suspects-adapter-not-safetensors", "suspects {ws}/out --source demo --adapter {in}/binary.csv",
      r"binary\.csv is not a safetensors file"),
    C("suspects-adapter-folder-without-config", "suspects {ws}/out --source demo --adapter {in}/adir",
      r"has no adapter_config\.json"),
    C("suspects-top-1.5", "suspects {ws}/out --source demo --top 1.5", r"top = 1\.5 is out of range"),
    C("suspects-method-unknown", "suspects {ws}/out --source demo --method loo", r"method: unknown value 'loo'"),
    C("suspects-group-unknown", "suspects {ws}/out --source demo --group nope", r"unknown layer group 'nope'"),
    C("suspects-datainf-on-we", "suspects {ws}/out --source demo --group WE", r"does not apply to the WE"),
    C("suspects-model-misspelled", "suspects {ws}/out --source demo --model minlm", r"did you mean 'minilm'"),
    C("suspects-noise-rate", "suspects {ws}/out --source demo --noise-rate 0.1", r"no such option"),
    C("suspects-out-is-a-file", "suspects {ws}/afile --source demo", r"afile is a file"),
    C("suspects-missing-csv", "suspects {ws}/out --source {in}/none.csv", r"not found"),
    C("suspects-run-missing", "suspects {ws}/out --run {ws}/nothing", r"nothing does not exist"),
    C("suspects-run-is-a-file", "suspects {ws}/out --run {ws}/afile", r"afile is a file"),
    C("suspects-run-with-source-options", "suspects {ws}/out --run {run} --epochs 2", r"only apply with source",
      state="finished"),
    C("suspects-run-corrupted-gradients", "suspects {ws}/out --run {run} --method tracin --group CL",
      r"CL\.classifier\.weight\.npy is corrupted.*layerinf grads", state="finished",
      setup=_flip("grads/train/CL.classifier.weight.npy")),
    C("suspects-run-stale-grads", "suspects {ws}/out --run {run} --method tracin --group CL",
      r"made from an older 'finetune' stage", state="finished", setup=_stale("finetune")),
    C("suspects-run-before-finetune", "suspects {ws}/out --run {run}", r"layerinf finetune", state="prepared"),
    # ---- advise
    C("advise-probe-rate-0.9", "advise {ws}/out --source demo --probe-rate 0.9", r"probe_rate=0\.9 is outside"),
    C("advise-noise-rate", "advise {ws}/out --source demo --noise-rate 0.1", r"no such option"),
    C("advise-executor", "advise {ws}/out --source demo --executor ray", r"no such option"),
    # ---- demo
    C("demo-epochs-0", "demo --out {ws}/demo --epochs 0", r"epochs = 0 is out of range"),
    C("demo-epochs-abc", "demo --out {ws}/demo --epochs abc", r"epochs.*(valid|integer)"),
    C("demo-out-is-a-file", "demo --out {ws}/afile", r"afile is a file"),
    C("demo-out-inside-a-file", "demo --out {ws}/afile/sub", r"afile is a file"),
    C("demo-unknown-option", "demo --out {ws}/demo --model minilm", r"no such option"),
    # ---- no command
    C("unknown-command", "prepair {run}", r"no such command"),
]


# ------------------------------------------------------------------------------------------------ fixtures


def _write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(f"a fine film number {i}" if i % 2 else f"a dull film number {i}", "pos" if i % 2 else "neg")
            for i in range(40)]
    (folder / "train.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    (folder / "nolabel.csv").write_text("text,other\n" + "".join(f"{t},x\n" for t, _ in rows))
    (folder / "oneclass.csv").write_text("text,label\n" + "".join(f"{t},pos\n" for t, _ in rows))
    (folder / "dev_unknown.csv").write_text("text,label\n" + "".join(
        f"{t},{lab if i % 3 else 'neutral'}\n" for i, (t, lab) in enumerate(rows[:20])))
    (folder / "empty.csv").write_bytes(b"")
    (folder / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (folder / "adir").mkdir(exist_ok=True)
    (folder / "c.yaml").write_text(CONFIG)
    (folder / "list.yaml").write_text("- name: a\n- name: b\n")
    (folder / "broken.yaml").write_text("name: [unclosed\ndata: {\n")
    (folder / "section.yaml").write_text("name: c\nnope: {a: 1}\n")
    (folder / "key.yaml").write_text("name: c\ntrain: {epoch: 1}\n")
    (folder / "traversal.yaml").write_text("name: ../../x\n")


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> dict[str, Path]:
    """The shared tiny run in each state a case may start from (made once, copied per case)."""
    import layerinf as li
    from layerinf.config import ExperimentConfig

    base = tmp_path_factory.mktemp("states")
    finished = base / "finished"
    li.run(ExperimentConfig.from_dict(DETECTION_ONLY), finished, progress=False, echo=None)
    out = {"finished": finished}
    for state, drop in (("graded", ["scores"]), ("finetuned", ["scores", "grads"]),
                        ("prepared", ["scores", "grads", "finetune"])):
        out[state] = base / state
        shutil.copytree(finished, out[state])
        for name in drop:
            shutil.rmtree(out[state] / name)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    _write_inputs(folder)
    return folder


def _workspace(root: Path, case: Case, states: dict[str, Path]) -> Path:
    ws = root / case.id
    ws.mkdir()
    (ws / "afile").write_text("a regular file, not a folder\n")
    (ws / "empty").mkdir()
    if case.state != "new":
        shutil.copytree(states[case.state], ws / "run")
        if case.setup is not None:
            case.setup(ws / "run")
    return ws


def _selected(request, name: str) -> list[Case]:
    """The cases of test ``name`` that this session runs (all of them unless -k / node ids select fewer)."""
    here = Path(__file__).resolve()
    ids = {item.callspec.params["case"].id for item in request.session.items
           if getattr(item, "originalname", None) == name and hasattr(item, "callspec")
           and Path(str(item.fspath)).resolve() == here}
    return [c for c in CASES if c.id in ids]


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, inputs):
    """Every selected case run once: (result, snapshot before, snapshot after) by case id."""
    cases = _selected(request, "test_bad_input")
    needs_run = any(c.state != "new" for c in cases)
    run_states = request.getfixturevalue("states") if needs_run else {}
    root = tmp_path_factory.mktemp("cases")
    inputs_before = snapshot(inputs)

    def one(case: Case):
        ws = _workspace(root, case, run_states)
        before = snapshot(ws)
        args = [a.format(run=ws / "run", ws=ws, **{"in": inputs}) for a in case.args]
        res = run_cli(*args, cwd=ws)
        return case.id, (res, before, snapshot(ws))

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = dict(pool.map(one, cases))
    assert snapshot(inputs) == inputs_before  # no case wrote next to its input files
    return results


# ------------------------------------------------------------------------------------------------ tests


def test_battery_size():
    """At least 60 distinct cases, and every command has some."""
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({(c.args, c.state, getattr(c.setup, "desc", None)) for c in CASES}) == len(CASES)
    assert len(CASES) >= 60
    assert {c.args[0] for c in CASES} >= set(COMMANDS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, outcomes):
    res, before, after = outcomes[case.id]
    line = one_error_line(res, case.code)
    assert re.search(case.match, line, flags=re.I | re.S), line
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the command changed its workspace: {changed[:10]}"


def test_misspelled_model_fails_fast_offline(tmp_path, states):
    """`--model minlm` offline: a did-you-mean before any model file is read, with no network attempt (the
    command runs under an audit hook that records both), and the run is left as it was."""
    ws = tmp_path / "ws"
    ws.mkdir()
    run = ws / "run"
    shutil.copytree(states["prepared"], run)
    before = snapshot(ws)
    res, reached = run_cli_audited("finetune", run, "--model", "minlm", cwd=ws, audit_log=tmp_path / "audit.log")
    assert "did you mean 'minilm'" in one_error_line(res)
    assert reached == [], reached  # no model file opened, no connection or name lookup
    assert snapshot(ws) == before


@pytest.mark.parametrize("what", ["output folder", "data file"])
def test_permissions(tmp_path, inputs, what):
    """A read-only output folder and an unreadable data file: one clear line, nothing written (skipped where
    permissions do not apply, e.g. as root; the cases 'inside a file' above cover a folder that cannot be
    written there)."""
    locked = tmp_path / "ro"
    locked.mkdir()
    data = tmp_path / "train.csv"
    shutil.copy(inputs / "train.csv", data)
    try:
        if what == "output folder":
            locked.chmod(0o500)
            if os.access(locked, os.W_OK):
                pytest.skip("permissions are not enforced for this user (root)")
            args, match = ["prepare", locked / "run"], r"cannot (write|create).*ro"
        else:
            data.chmod(0o000)
            if os.access(data, os.R_OK):
                pytest.skip("permissions are not enforced for this user (root)")
            args, match = ["prepare", locked / "run", "--source", data], r"train\.csv"
        listing = sorted(p.name for p in tmp_path.iterdir())
        line = one_error_line(run_cli(*args, cwd=tmp_path))
        assert re.search(match, line, flags=re.I), line
        assert sorted(p.name for p in tmp_path.iterdir()) == listing and not (locked / "run").exists()
    finally:
        locked.chmod(0o700)
        data.chmod(0o600)
