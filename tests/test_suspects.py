"""`layerinf suspects`: rank a user's training examples with no noise mask (tiny MiniLM runs, CPU).

The main test corrupts 20 % of the labels of a slice of the demo data itself, hands the file over as "the
user's data" and checks that its own noisy examples are enriched among the suspects (NDR@30 > 0.30 = chance).
"""

import json
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch

from layerinf.config import DataConfig, ModelConfig, TrainConfig
from layerinf.data import DEMO_LABELS, load_demo
from layerinf.errors import LayerinfError
from layerinf.stages.data import DataStage
from layerinf.stages.finetune import FinetuneStage
from layerinf.stages.rank import COLUMNS, SuspectsResult, default_group
from layerinf.stages.rank_page import render_html
from layerinf.store.rundir import RunDir
from layerinf.workflows.suspects import find_suspects, summary_table

N_TRAIN, N_DEV, NOISE = 120, 56, 0.20
# 60 small steps on short, plainly worded reviews: enough for MiniLM to learn the task on 2 busy CPU cores
TRAIN = dict(epochs=4, batch_size=8, lr=1e-2, max_length=32, min_steps=None, progress=False)
_HARD = re.compile(r"\b(?:not|no|never|nothing|hardly|far from|although|though|but|despite|without)\b|n't", re.I)


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Short reviews without negation or contrast (the demo's hard cases need more training than a test has)."""
    keep = ~df["text"].str.contains(_HARD) & (df["text"].str.split().str.len() <= 10)
    return df[keep].reset_index(drop=True)


def _pick(labels: np.ndarray, n: int, rng) -> np.ndarray:
    """n positions, half per class."""
    out = [rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)]
    return np.sort(np.concatenate(out))


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A 'user' CSV (demo train slice, 20 % labels flipped by the test) and a clean JSONL dev file."""
    rng = np.random.default_rng(7)
    raw = load_demo()
    train_pool, dev_pool = _plain(raw.train), _plain(raw.dev)
    tr = train_pool.iloc[_pick(train_pool["label"].to_numpy(), N_TRAIN, rng)].reset_index(drop=True)
    dv = dev_pool.iloc[_pick(dev_pool["label"].to_numpy(), N_DEV, rng)].reset_index(drop=True)
    labels = tr["label"].to_numpy().copy()
    mask = np.zeros(len(tr), bool)
    mask[rng.choice(len(tr), int(NOISE * len(tr)), replace=False)] = True
    labels[mask] = 1 - labels[mask]
    folder = tmp_path_factory.mktemp("user")
    train_csv = folder / "my_train.csv"
    pd.DataFrame({"review": tr["text"], "sentiment": [DEMO_LABELS[i] for i in labels]}).to_csv(train_csv, index=False)
    dev = folder / "my_dev.jsonl"
    pd.DataFrame({"review": dv["text"], "sentiment": [DEMO_LABELS[i] for i in dv["label"]]}).to_json(
        dev, orient="records", lines=True)
    return train_csv, dev, mask


@pytest.fixture(scope="module")
def user_result(user_files, tmp_path_factory):
    train_csv, dev, mask = user_files
    out = tmp_path_factory.mktemp("suspects_out")
    t0 = time.time()
    res = find_suspects(out, source=str(train_csv), dev_source=str(dev), text_column="review",
                        label_column="sentiment", max_dev=N_DEV, **TRAIN)
    print(f"\nfind_suspects (source mode, {N_TRAIN} train): {time.time() - t0:.1f}s")
    return out, res, mask


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A prepared (20 % noise, so the mask is known) and fine-tuned run directory."""
    run = tmp_path_factory.mktemp("tiny_run")
    DataStage(run).run(DataConfig(source="demo", max_train=80, max_dev=40, noise_rate=0.2, seed=1))
    FinetuneStage(run).run(ModelConfig(max_length=32), TrainConfig(epochs=1), progress=False)
    return run


# ------------------------------------------------------------------------------------------- source mode


@pytest.mark.slow
def test_source_mode_outputs(user_result):
    out, res, _ = user_result
    assert isinstance(res, SuspectsResult)
    folder = out / "suspects"
    for name in ("suspects.csv", "suspects.jsonl", "index.html", "summary.json"):
        assert (folder / name).is_file(), name
    assert res.group == default_group(6) == "02-03"
    assert (res.method, res.aggregator) == ("datainf", "vote")
    assert not res.mask_known and res.ndr_30 is None

    csv = pd.read_csv(folder / "suspects.csv")
    assert list(csv.columns) == COLUMNS  # no `noisy`: the user's data carry no mask
    rows = [json.loads(line) for line in (folder / "suspects.jsonl").read_text().splitlines()]
    assert len(rows) == len(csv) == N_TRAIN and list(rows[0]) == COLUMNS
    assert csv["rank"].tolist() == list(range(1, N_TRAIN + 1))
    assert np.all(np.diff(csv["score"].to_numpy()) >= 0)  # lowest score = rank 1
    assert sorted(csv["index"]) == list(range(N_TRAIN))
    assert csv["suspect"].sum() == int(0.30 * N_TRAIN) and csv["suspect"].head(int(0.30 * N_TRAIN)).all()
    assert set(csv["given_label"]) <= set(DEMO_LABELS) and set(csv["predicted_label"]) <= set(DEMO_LABELS)
    assert csv["probability"].between(0, 1).all()
    # the whole table round-trips into the result object
    assert res.table["index"].tolist() == csv["index"].tolist()
    assert np.allclose(res.table["score"], csv["score"])

    page = (folder / "index.html").read_text()
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert "<link" not in page and "higher score = more helpful" in page and "retrain" in page

    top = summary_table(res, k=10)
    assert len(top) == 10 and top["rank"].tolist() == list(range(1, 11))
    assert {"rank", "given", "predicted", "p(given)", "score", "text"} <= set(top.columns)


@pytest.mark.slow
def test_source_mode_finds_injected_noise(user_result):
    _, res, mask = user_result
    t = res.table
    assert t["source_idx"].tolist() == t["index"].tolist()  # no cap: split idx = row in the user's file
    flagged = t.loc[t["suspect"], "source_idx"].to_numpy()
    precision = mask[flagged].mean()  # flagging at random: the flipped share of all rows
    print(f"\nflipped among the {len(flagged)} flagged: {precision:.3f} (chance {mask.mean():.3f}; "
          f"{mask.sum()} flipped of {len(mask)})")
    assert precision > mask.mean()


@pytest.mark.slow
def test_html_escapes_texts(user_result):
    _, res, _ = user_result
    table = res.table.copy()
    table.loc[0, "text"] = "<script>alert('x')</script> & <b>bold</b>"
    page = render_html(SuspectsResult(**{**res.__dict__, "table": table}))
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page


@pytest.mark.slow
def test_rerun_is_reused(user_files, user_result):
    train_csv, dev, _ = user_files
    out, res, _ = user_result
    started = {s: RunDir(out).stage_info(s)["started"] for s in ("data", "finetune", "grads", "suspects")}
    again = find_suspects(out, source=str(train_csv), dev_source=str(dev), text_column="review",
                          label_column="sentiment", max_dev=N_DEV, **TRAIN)
    assert {s: RunDir(out).stage_info(s)["started"] for s in started} == started  # nothing redone
    assert again.table["index"].tolist() == res.table["index"].tolist()


@pytest.mark.slow
def test_changed_source_file_redoes_the_stages(user_files, user_result, tmp_path):
    """Fixing labels in the file and rerunning must not reuse the model trained on the old labels."""
    train_csv, dev, _ = user_files
    out, _, _ = user_result
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    edited = tmp_path / "edited.csv"
    df = pd.read_csv(train_csv)
    df.loc[0, "sentiment"] = "positive" if df.loc[0, "sentiment"] == "negative" else "negative"
    df.to_csv(edited, index=False)
    cfg = DataConfig(source=str(train_csv), max_train=None, max_dev=N_DEV, noise_rate=0.0, text_column="review",
                     label_column="sentiment", dev_source=str(dev))
    run = RunDir(copy)
    data_print = run.fingerprint("data")
    DataStage(run).run(cfg)  # unchanged file: everything kept
    assert run.fingerprint("data") == data_print
    run.require("finetune")
    original = train_csv.read_bytes()
    try:
        train_csv.write_bytes(edited.read_bytes())
        prepared = DataStage(run).run(cfg)
    finally:
        train_csv.write_bytes(original)
    assert prepared.train.loc[0, "label"] == DEMO_LABELS.index(df.loc[0, "sentiment"])
    # the data changed, so the model trained on the old labels is refused until it is redone
    assert run.fingerprint("data") != data_print
    assert run.stage_info("finetune")["inputs"]["data"] == data_print
    with pytest.raises(LayerinfError, match="made from an older 'data' stage"):
        run.require("finetune")


# ------------------------------------------------------------------------------------------- run mode


@pytest.mark.slow
def test_run_mode_reports_ndr(tiny_run, tmp_path):
    res = find_suspects(tmp_path / "s", run=tiny_run, progress=False)
    assert RunDir(tiny_run).is_finished("grads")  # computed in the run because it was missing
    assert res.mask_known and res.ndr_30 is not None and 0.0 <= res.ndr_30 <= 1.0
    assert res.auc_ndr is not None
    csv = pd.read_csv(tmp_path / "s" / "suspects" / "suspects.csv")
    assert list(csv.columns) == COLUMNS + ["noisy"]
    assert csv["noisy"].sum() == int(0.2 * 80)
    page = (tmp_path / "s" / "suspects" / "index.html").read_text()
    assert "NDR@30" in page
    summary = json.loads((tmp_path / "s" / "suspects" / "summary.json").read_text())
    assert summary["ndr_30"] == pytest.approx(res.ndr_30)
    assert set(summary["ndr_30_by_aggregator"]) == {f"datainf/02-03/{a}" for a in ("vote", "mean", "rank")}
    print(f"\nrun mode (tiny, 1 epoch): NDR@30 = {res.ndr_30:.3f}, AUC-NDR = {res.auc_ndr:.3f}")

    other = find_suspects(tmp_path / "s2", run=tiny_run, method="tracin", group="L05", aggregator="mean",
                          top=0.1, progress=False)
    assert other.group == "L05" and other.n_suspects == 8 and other.table["suspect"].sum() == 8


# ------------------------------------------------------------------------------------------- adapters


@pytest.mark.slow
def test_layerinf_adapter_file(tiny_run, tmp_path):
    adapter = tiny_run / "finetune" / "best.safetensors"
    res = find_suspects(tmp_path / "a", source="demo", max_train=30, max_dev=20, adapter=adapter, max_length=32,
                        progress=False)
    run = RunDir(tmp_path / "a")
    assert res.n == 30 and res.checkpoint == "best" and run.stage_info("finetune")["summary"]["imported"]
    assert not (tmp_path / "a" / "finetune" / "init.safetensors").exists()  # imported: nothing to retrain from


@pytest.mark.slow
def test_peft_adapter_without_head_warns(tmp_path):
    from peft import LoraConfig, get_peft_model

    from layerinf.model.loading import load_base_model

    base = load_base_model("minilm", 2, seed=0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=4, target_modules=["query", "value"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # as if trained: B = 0 would make every lora_A gradient zero
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    peft_model.save_pretrained(tmp_path / "peft")
    with pytest.warns(UserWarning, match="untrained"):
        res = find_suspects(tmp_path / "p", source="demo", max_train=30, max_dev=20, adapter=tmp_path / "peft",
                            max_length=32, progress=False)
    assert res.n == 30 and len(res.table) == 30
    from layerinf.model.loading import import_adapter

    with pytest.warns(UserWarning, match="untrained"):
        imported = import_adapter("minilm", tmp_path / "peft", 2).model
    want = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    got = {n: p for n, p in imported.named_parameters() if p.requires_grad}
    assert {n for n in got if "lora_" in n} == set(want) and len(got) == len(want) + 2  # + the head's 2
    assert all(torch.equal(got[n], want[n]) for n in want)  # the adapter's own LoRA tensors


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of"),
        ({"source": "demo", "run": "somewhere"}, "not both"),
        ({"source": "demo", "method": "magic"}, "rank.method: unknown value 'magic'"),
        ({"source": "demo", "aggregator": "median"}, "rank.aggregator: unknown value 'median'"),
        ({"source": "demo", "top": 0.0}, r"rank.top = 0.0 is out of range \(0.0, 1.0\)"),
        ({"source": "demo", "top": 1.0}, "rank.top = 1.0 is out of range"),
        ({"source": "demo", "top": 1.5}, "rank.top = 1.5 is out of range"),
        ({"source": "demo", "vote_kappa": 0}, "vote_kappa = 0.0 is out of range"),
        ({"source": "demo", "kappa": 0.3}, "did you mean 'vote_kappa'"),
        ({"source": "demo", "colour": "red"}, "unknown option"),
    ],
)
def test_bad_input(tmp_path, kwargs, match):
    with pytest.raises(LayerinfError, match=match):
        find_suspects(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()  # nothing written


@pytest.mark.slow
def test_bad_group_and_run_options(tiny_run, tmp_path):
    with pytest.raises(LayerinfError, match="unknown layer group 'middle'"):
        find_suspects(tmp_path / "g", run=tiny_run, group="middle", progress=False)
    with pytest.raises(LayerinfError, match="does not apply"):
        find_suspects(tmp_path / "g", run=tiny_run, group="WE", progress=False)  # DataInf has no WE
    with pytest.raises(LayerinfError, match="only apply with source="):
        find_suspects(tmp_path / "g", run=tiny_run, adapter="x.safetensors", progress=False)
    with pytest.raises(LayerinfError, match="does not exist"):
        find_suspects(tmp_path / "g", run=tmp_path / "no_such_run", progress=False)
    with pytest.raises(LayerinfError, match="has not finished"):
        find_suspects(tmp_path / "g", run=tmp_path, progress=False)  # a folder without data/


@pytest.mark.parametrize("kind, match", [
    ("missing", "does not exist"),
    ("text", "is not a safetensors file"),
    ("folder", "has no adapter_config.json"),
    ("no-lora", "holds no LoRA tensors"),
])
def test_a_bad_adapter_is_refused_before_the_data_are_prepared(tmp_path, kind, match):
    """The adapter is checked first: a bad one leaves no output folder (no data/ stage) behind."""
    from safetensors.torch import save_file

    adapter = tmp_path / "adapter.safetensors"
    if kind == "text":
        adapter.write_text("not a safetensors file\n")
    elif kind == "folder":
        adapter = tmp_path / "peft"
        adapter.mkdir()
    elif kind == "no-lora":
        save_file({"classifier.weight": torch.zeros(2, 4)}, str(adapter))
    with pytest.raises(LayerinfError, match=match):
        find_suspects(tmp_path / "out", source="demo", adapter=adapter, progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- cross-fitting

TINY_FIT = dict(epochs=1, batch_size=16, max_length=24, min_steps=None, progress=False)  # one short MiniLM epoch per fit


def _user_csv(path, n: int, seed: int = 3):
    """n demo training rows (half per class, shuffled) as a user's CSV with an extra column; returns the frame."""
    raw = load_demo()
    rng = np.random.default_rng(seed)
    rows = raw.train.iloc[rng.permutation(_pick(raw.train["label"].to_numpy(), n, rng))].reset_index(drop=True)
    df = pd.DataFrame({"id": np.arange(1000, 1000 + n), "review": rows["text"],
                       "sentiment": [DEMO_LABELS[i] for i in rows["label"]]})
    df.to_csv(path, index=False)
    return df


def _stage_times(out):
    """`started` of every finished stage under out (the combined ranking and every fold's stages)."""
    runs = [RunDir(out)] + [RunDir(p) for p in sorted((out / "folds").iterdir())]
    return {(str(r.root), s): r.stage_info(s)["started"] for r in runs for s in ("data", "finetune", "grads", "suspects")
            if r.is_finished(s, verify=False)}


def _check_every_row_once(folder, df):
    """suspects.csv ranks each row of the user's file exactly once, with its text and label by source_idx."""
    csv = pd.read_csv(folder / "suspects.csv", keep_default_na=False)
    assert len(csv) == len(df) and sorted(csv["source_idx"]) == list(range(len(df)))
    assert csv["rank"].tolist() == list(range(1, len(df) + 1))
    by_row = csv.sort_values("source_idx").reset_index(drop=True)
    assert by_row["text"].tolist() == df["review"].tolist()  # row by row against the input file
    assert by_row["given_label"].tolist() == df["sentiment"].tolist()
    return csv


@pytest.fixture(scope="module")
def crossfit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crossfit")
    df = _user_csv(folder / "mine.csv", 48)
    out = folder / "out"
    t0 = time.time()
    res = find_suspects(out, source=str(folder / "mine.csv"), text_column="review", label_column="sentiment",
                        **TINY_FIT)
    print(f"\ncross-fitted suspects (48 rows, 3 folds, 1 epoch): {time.time() - t0:.1f}s")
    return folder, out, df, res


@pytest.mark.slow
def test_crossfit_ranks_every_row_once(crossfit):
    _, out, df, res = crossfit
    csv = _check_every_row_once(out / "suspects", df)
    assert res.n == 48 and res.coverage["how"] == "crossfit" and res.coverage["folds"] == 3
    assert res.coverage["ranked"] == res.coverage["rows"] == 48
    assert res.coverage_text.startswith("48 of 48 rows ranked, cross-fitted over 3 folds")
    assert csv["score"].between(0, 1).all() and np.all(np.diff(csv["score"]) >= 0)
    assert csv["probability"].between(0, 1).all() and csv["suspect"].sum() == res.detection["flagged"]
    assert csv["p_given_oos"].between(0, 1).all() and {"score:influence", "score:combined"} <= set(csv.columns)
    page = (out / "suspects" / "index.html").read_text()
    assert "48 of 48 rows ranked, cross-fitted over 3 folds" in page and "<th" in page and "source_idx</th>" in page
    first = csv.iloc[0]
    assert f'<td class="num">{first["rank"]}</td><td class="num">{first["source_idx"]}</td>' in page
    summary = json.loads((out / "suspects" / "summary.json").read_text())
    assert summary["coverage"]["ranked"] == 48 and "percentile" in summary["rule"]


@pytest.mark.slow
def test_crossfit_folds_partition_the_rows(crossfit):
    """Fold k trains on the other folds and validates on fold k; every row is a training row of 2 fits."""
    _, out, df, _ = crossfit
    from layerinf.stages.data import load_data

    held, trained = [], np.zeros(len(df), int)
    for k in range(3):
        prepared = load_data(out / "folds" / f"fold-{k}")
        infl = set(prepared.infl["source_idx"])
        assert infl == set(prepared.test["source_idx"])  # the fold is the influence and the test set
        assert not infl & set(prepared.train["source_idx"])
        assert set(prepared.train["source_idx"]) | infl == set(range(len(df)))
        assert prepared.train["text"].tolist() == df["review"].iloc[prepared.train["source_idx"]].tolist()
        held.append(infl)
        trained[prepared.train["source_idx"].to_numpy()] += 1
    assert set().union(*held) == set(range(len(df))) and sum(map(len, held)) == len(df)
    assert (trained == 2).all()
    counts = [np.bincount(load_data(out / "folds" / f"fold-{k}").infl["label"]) for k in range(3)]
    assert all(abs(int(c[0]) - int(c[1])) <= 1 for c in counts)  # stratified


@pytest.mark.slow
def test_crossfit_score_is_the_mean_within_fit_percentile(crossfit):
    from scipy.stats import rankdata

    from layerinf.stages.data import load_data

    _, out, df, res = crossfit
    key = res.config_key
    total, count = np.zeros(len(df)), np.zeros(len(df))
    for k in range(3):
        fold = out / "folds" / f"fold-{k}"
        scores = pd.read_parquet(fold / "suspects" / "scores.parquet").sort_values("idx")[key].to_numpy()
        prepared = load_data(fold)
        rows = prepared.train["source_idx"].to_numpy()
        own = ~np.isin(rows, prepared.meta["planted"]["source_idx"])  # the probe's planted rows are left out
        total[rows[own]] += ((rankdata(scores) - 1) / (len(scores) - 1))[own]
        count[rows[own]] += 1
    want = total / count
    t = res.table
    assert np.allclose(t["score:influence"].to_numpy(), want[t["source_idx"].to_numpy()])


@pytest.mark.slow
def test_crossfit_rerun_reuses_every_fold(crossfit, monkeypatch):
    from layerinf.stages import task

    folder, out, df, res = crossfit
    before = _stage_times(out)
    assert len(before) == 1 + 3 * 4  # the combined ranking, and data/finetune/grads/suspects per fold
    loads = []

    def no_model(*args, **kwargs):  # every stage that trains or collects gradients loads its model through here
        loads.append(args)
        raise AssertionError("the rerun loaded a model: a stage was recomputed")

    monkeypatch.setattr(task.ClassificationTask, "load_model", no_model)
    again = find_suspects(out, source=str(folder / "mine.csv"), text_column="review", label_column="sentiment",
                          **TINY_FIT)
    assert _stage_times(out) == before  # nothing retrained, nothing recomputed
    assert loads == []  # not even a model loaded
    assert again.table["source_idx"].tolist() == res.table["source_idx"].tolist()


@pytest.mark.slow
def test_crossfit_resumes_after_a_lost_fold(crossfit, tmp_path):
    """A fold that is gone (e.g. killed) is redone alone; the finished folds are reused."""
    folder, out, _, _ = crossfit
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "folds" / "fold-2")
    before = {k: v for k, v in _stage_times(copy).items() if "fold-2" not in k[0] and k[0] != str(copy)}
    find_suspects(copy, source=str(folder / "mine.csv"), text_column="review", label_column="sentiment",
                  **TINY_FIT)
    after = _stage_times(copy)
    assert {k: after[k] for k in before} == before and any("fold-2" in k[0] for k in after)


@pytest.mark.slow
def test_one_fold_says_how_many_rows_were_not_ranked(crossfit, tmp_path):
    folder, _, df, _ = crossfit
    res = find_suspects(tmp_path / "one", source=str(folder / "mine.csv"), text_column="review",
                        label_column="sentiment", folds=1, **TINY_FIT)
    assert res.coverage["how"] == "carved" and res.coverage["rows"] == len(df)
    left = len(df) - res.n
    assert left > 0 and f"{res.n} of {len(df)} rows ranked by one fit; {left} rows were NOT ranked" in res.coverage_text
    assert "NOT ranked" in (tmp_path / "one" / "suspects" / "index.html").read_text()
    assert not (tmp_path / "one" / "folds").exists()


@pytest.mark.slow
def test_dev_source_ranks_every_training_row_in_one_fit(user_result):
    _, res, _ = user_result
    assert res.coverage["how"] == "dev_source" and res.coverage["ranked"] == res.coverage["rows"] == N_TRAIN
    assert res.coverage_text.startswith(f"{N_TRAIN} of {N_TRAIN} rows ranked by one fit")


def test_too_many_folds_for_a_class_is_refused_before_anything_is_written(tmp_path):
    df = _user_csv(tmp_path / "few.csv", 12)
    with pytest.raises(LayerinfError, match="too few for folds=7"):
        find_suspects(tmp_path / "x", source=str(tmp_path / "few.csv"), text_column="review", label_column="sentiment",
                      folds=7, **TINY_FIT)
    assert not (tmp_path / "x").exists() and len(df) == 12


@pytest.mark.slow
def test_cli_health_warning_and_coverage(tmp_path, capsys):
    """lr 1e-9: no useful step, so the model has not learned; the console and the page say so."""
    from layerinf.cli import main

    _user_csv(tmp_path / "mine.csv", 32)
    out = tmp_path / "out"
    try:
        main(["suspects", str(out), "--source", str(tmp_path / "mine.csv"), "--text-column", "review",
              "--label-column", "sentiment", "--lr", "1e-9", "--epochs", "1", "--max-length", "24",
              "--batch-size", "16", "--folds", "2", "--min-steps", "1"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    text = " ".join(capsys.readouterr().out.split())
    assert "WARNING" in text and "not clearly learned" in text
    assert "32 of 32 rows ranked, cross-fitted over 2 folds" in text
    page = (out / "suspects" / "index.html").read_text()
    assert 'class="box warn"' in page and "not clearly learned" in " ".join(page.split())
    from layerinf.stages.rank import load_result

    res = load_result(out / "suspects")  # the result object carries them too
    assert res.health and all("not clearly learned" in w for w in res.health)


def test_cli_suspects_has_the_cost_knobs(capsys):
    from layerinf.cli import main

    try:
        main(["suspects", "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    text = capsys.readouterr().out
    for flag in ("--max-train", "--max-length", "--batch-size", "--lr", "--device", "--folds", "--epochs",
                 "--dev-source", "--run"):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), flag
    assert "--run-dir" not in text  # one name per option: --run, as the API's run=


@pytest.mark.slow
def test_500_row_csv_ranks_500_rows_and_the_page_shows_source_idx(tmp_path):
    df = _user_csv(tmp_path / "big.csv", 500, seed=11)
    t0 = time.time()
    res = find_suspects(tmp_path / "out", source=str(tmp_path / "big.csv"), text_column="review",
                        label_column="sentiment", epochs=1, batch_size=32, max_length=24, min_steps=None, progress=False)
    print(f"\n500-row cross-fitted suspects: {time.time() - t0:.1f}s")
    assert res.n == 500 and res.coverage_text.startswith("500 of 500 rows ranked, cross-fitted over 3 folds")
    csv = _check_every_row_once(tmp_path / "out" / "suspects", df)
    page = (tmp_path / "out" / "suspects" / "index.html").read_text()
    assert "500 of 500 rows ranked" in page and "source_idx</th>" in page
    for r in csv[csv["suspect"]].head(20).itertuples():
        assert f'<td class="num">{r.rank}</td><td class="num">{r.source_idx}</td>' in page
