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
TRAIN = dict(epochs=4, batch_size=8, lr=1e-2, max_length=32, progress=False)
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


def test_source_mode_finds_injected_noise(user_result):
    _, res, mask = user_result
    t = res.table
    assert t["source_idx"].tolist() == t["index"].tolist()  # no cap: split idx = row in the user's file
    flagged = t.loc[t["suspect"], "source_idx"].to_numpy()
    ndr = mask[flagged].sum() / mask.sum()
    print(f"\nNDR@30 on the test's own mask ({mask.sum()} flipped of {len(mask)}): {ndr:.3f} (chance 0.30)")
    assert ndr > 0.30


def test_html_escapes_texts(user_result):
    _, res, _ = user_result
    table = res.table.copy()
    table.loc[0, "text"] = "<script>alert('x')</script> & <b>bold</b>"
    page = render_html(SuspectsResult(**{**res.__dict__, "table": table}))
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page


def test_rerun_is_reused(user_files, user_result):
    train_csv, dev, _ = user_files
    out, res, _ = user_result
    started = {s: RunDir(out).stage_info(s)["started"] for s in ("data", "finetune", "grads", "suspects")}
    again = find_suspects(out, source=str(train_csv), dev_source=str(dev), text_column="review",
                          label_column="sentiment", max_dev=N_DEV, **TRAIN)
    assert {s: RunDir(out).stage_info(s)["started"] for s in started} == started  # nothing redone
    assert again.table["index"].tolist() == res.table["index"].tolist()


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


def test_layerinf_adapter_file(tiny_run, tmp_path):
    adapter = tiny_run / "finetune" / "best.safetensors"
    res = find_suspects(tmp_path / "a", source="demo", max_train=30, max_dev=20, adapter=adapter, max_length=32,
                        progress=False)
    run = RunDir(tmp_path / "a")
    assert res.n == 30 and res.checkpoint == "best" and run.stage_info("finetune")["summary"]["imported"]
    assert not (tmp_path / "a" / "finetune" / "init.safetensors").exists()  # imported: nothing to retrain from


@pytest.mark.xfail(strict=True, reason="a PEFT adapter without head weights is imported without a trainable head, so "
                   "finetune/best.safetensors lacks the 2 head tensors that load_classifier expects (grads fails: "
                   "'does not fit this model (2 tensors missing)'); fix in model/adapters.py import_adapter / "
                   "stages/finetune.py AdapterStage.compute — fails at HEAD too")
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
