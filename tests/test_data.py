"""Data layer: loaders (GLUE, files, HF, demo), stratified splits, label noise, prepare and save/load."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerinf.data import (
    SPLIT_COLUMNS,
    PreparedData,
    from_hf_dataset,
    inject_noise,
    load_demo,
    load_prepared,
    load_source,
    make_splits,
    noise_count,
    parse_hf,
    prepare,
    read_glue_tsv,
    save_prepared,
    split_infl_test,
    stratified_subset,
)
from layerinf.errors import LayerinfError

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("LAYERINF_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))


@pytest.fixture(scope="module")
def glue() -> Path:
    if not GLUE_DIR.is_dir():
        pytest.skip(f"GLUE data folder {GLUE_DIR} is absent (../shared/data/glue; set LAYERINF_GLUE_DIR)")
    return GLUE_DIR


def _raises(match: str, fn, *args, **kw) -> str:
    with pytest.raises(LayerinfError, match=match) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg and " — " in msg  # one line: problem — fix
    return msg


# ------------------------------------------------------------------------------------------------ noise


@pytest.mark.parametrize("n,rate,k", [(10, 0.3, 3), (4500, 0.2, 900), (100, 0.29, 29), (7, 0.0, 0), (3, 0.2, 0),
                                      (3668, 0.2, 733)])
def test_noise_flips_exact_count_and_only_masked(n, rate, k):
    y = np.arange(n) % 2
    noisy, mask = inject_noise(y, rate, num_classes=2, seed=1)
    assert noise_count(n, rate) == k and mask.sum() == k and mask.dtype == bool
    assert np.array_equal(noisy[~mask], y[~mask])
    assert np.array_equal(noisy[mask], 1 - y[mask])  # binary: y -> 1 - y
    assert np.array_equal(y, np.arange(n) % 2)  # input untouched


def test_noise_multiclass_never_maps_to_itself_and_covers_others():
    y = np.full(3000, 1)
    noisy, mask = inject_noise(y, 0.5, num_classes=4, seed=0)
    assert mask.sum() == 1500
    assert (noisy[mask] != 1).all()
    assert set(np.unique(noisy[mask])) == {0, 2, 3}
    counts = np.bincount(noisy[mask], minlength=4)[[0, 2, 3]]
    assert counts.min() > 400  # roughly uniform over the other classes


def test_noise_seeding():
    y = np.arange(1000) % 2
    a, ma = inject_noise(y, 0.2, seed=5)
    b, mb = inject_noise(y, 0.2, seed=5)
    c, mc = inject_noise(y, 0.2, seed=6)
    assert np.array_equal(ma, mb) and np.array_equal(a, b)
    assert not np.array_equal(ma, mc)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_noise_rate_outside_range(rate):
    _raises(r"noise rate .* outside \[0, 1\)", inject_noise, np.zeros(10, int), rate)


def test_noise_bad_labels():
    _raises("labels must lie in 0..1", inject_noise, np.array([0, 1, 2]), 0.2, num_classes=2)
    _raises("integer class ids", inject_noise, np.array([0.0, 1.0]), 0.2)


# ------------------------------------------------------------------------------------------------ splits


def test_stratified_subset_preserves_proportions():
    y = np.array([0] * 300 + [1] * 700 + [2] * 50)
    keep = stratified_subset(y, 200, seed=0)
    assert len(keep) == 200 and len(np.unique(keep)) == 200 and np.all(np.diff(keep) > 0)
    expect = np.bincount(y) / len(y) * 200
    assert np.all(np.abs(np.bincount(y[keep]) - expect) <= 1)
    assert np.array_equal(keep, stratified_subset(y, 200, seed=0))
    assert not np.array_equal(keep, stratified_subset(y, 200, seed=1))
    assert np.array_equal(stratified_subset(y, 5000, seed=0), np.arange(len(y)))


def test_make_splits_sizes_disjoint_stratified():
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 2, 6000)
    dv = np.array([0] * 900 + [1] * 450)
    s = make_splits(tr, dv, max_train=4500, max_dev=1000, seed=3)
    assert len(s.train) == 4500 and len(s.infl) == 500 and len(s.test) == 500
    assert not set(s.infl) & set(s.test)
    for part, src, n in ((s.train, tr, 4500), (s.infl, dv, 500), (s.test, dv, 500)):
        expect = np.bincount(src) / len(src) * n
        assert np.all(np.abs(np.bincount(src[part]) - expect) <= 1)
    same = make_splits(tr, dv, max_train=4500, max_dev=1000, seed=3)
    assert np.array_equal(same.infl, s.infl) and np.array_equal(same.train, s.train)


def test_split_odd_dev_and_rte_quirk():
    y = np.array([0] * 146 + [1] * 131)
    infl, test = split_infl_test(y, seed=0)
    assert len(infl) + len(test) == 277 and abs(len(infl) - len(test)) == 1 and not set(infl) & set(test)
    a, b = split_infl_test(y, seed=0, infl_equals_test=True)
    assert np.array_equal(a, np.arange(277)) and np.array_equal(b, a)


def test_split_errors():
    _raises("train split is empty", make_splits, np.array([], int), np.array([0, 1, 0, 1]))
    _raises("dev split is empty", make_splits, np.array([0, 1, 0, 1]), np.array([], int))
    _raises("only 1 example", split_infl_test, np.array([0, 0, 0, 1]))
    _raises("only 1 example", stratified_subset, np.array([0] * 10 + [1]), 5)
    _raises("single class", make_splits, np.zeros(10, int), np.array([0, 1, 0, 1]))


# ------------------------------------------------------------------------------------------------ GLUE (real files)

GLUE_COUNTS = {  # task folder: (train rows, train class counts, dev rows, dev class counts), from the README
    "SST-2": (67349, [29780, 37569], 872, [428, 444]),
    "MRPC": (3668, [1194, 2474], 408, [129, 279]),
    "RTE": (2490, [1249, 1241], 277, [146, 131]),
    "CoLA": (8551, [2528, 6023], 1043, [322, 721]),
}


@pytest.mark.parametrize("task", sorted(GLUE_COUNTS))
def test_glue_real_counts(glue, task):
    n_tr, c_tr, n_dv, c_dv = GLUE_COUNTS[task]
    raw = load_source(str(glue / task))
    assert raw.task == task and len(raw.label_names) == 2
    assert len(raw.train) == n_tr and np.bincount(raw.train["label"]).tolist() == c_tr
    assert len(raw.dev) == n_dv and np.bincount(raw.dev["label"]).tolist() == c_dv
    assert list(raw.train.columns) == ["source_idx", "text", "text_pair", "label"]
    assert np.array_equal(raw.train["source_idx"], np.arange(n_tr))
    pair = task in ("MRPC", "RTE")
    assert raw.train["text_pair"].notna().all() == pair and raw.train["text_pair"].isna().all() == (not pair)
    assert (raw.train["text"].str.len() > 0).all()


def test_glue_label_names_and_root_plus_task(glue):
    assert load_source(str(glue / "RTE")).label_names == ["entailment", "not_entailment"]
    raw = load_source(str(glue), task="sst2")
    assert raw.task == "SST-2" and raw.label_names == ["negative", "positive"] and len(raw.dev) == 872
    assert load_source(str(glue / "MRPC")).train["text"].iloc[0].startswith("Amrozi accused his brother")
    _raises("several GLUE tasks", load_source, str(glue))


def test_glue_qnli_dev_only(glue):
    msg = _raises("has no train.tsv", load_source, str(glue / "QNLI"))
    assert "QNLI" in msg and "dev.tsv" in msg
    dev = read_glue_tsv(glue / "QNLI" / "dev.tsv", "QNLI")
    assert len(dev) == 5463 and np.bincount(dev["label"]).tolist() == [2702, 2761]


# ------------------------------------------------------------------------------------------------ GLUE (synthetic)


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


MNLI_HEAD = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label"


def _mnli_rows(labels):
    return [f"{i}\t1\t1\tfic\tx\tx\tx\tx\tpremise {i} \"q\tthe hypothesis {i}\t{g}\t{g}" for i, g in enumerate(labels)]


def test_synthetic_mnli_binarised(tmp_path):
    folder = tmp_path / "glue" / "MNLI"
    labels = ["entailment", "neutral", "contradiction", "neutral", "entailment", "contradiction"]
    _write(folder / "train.tsv", [MNLI_HEAD] + _mnli_rows(labels))
    _write(folder / "dev_matched.tsv", [MNLI_HEAD] + _mnli_rows(["neutral", "contradiction", "entailment"]))
    _write(folder / "dev_mismatched.tsv", [MNLI_HEAD] + _mnli_rows(["neutral"] * 9))
    raw = load_source(str(tmp_path / "glue"), task="mnli")
    assert raw.task == "MNLI" and raw.label_names == ["entailment", "neutral"]
    assert raw.train["label"].tolist() == [0, 1, 1, 0] and raw.train["source_idx"].tolist() == [0, 1, 3, 4]
    assert raw.dev["label"].tolist() == [1, 0] and len(raw.dev) == 2  # dev_matched, contradiction dropped
    assert raw.train["text"].iloc[0] == 'premise 0 "q' and raw.train["text_pair"].iloc[0] == "the hypothesis 0"


def test_synthetic_stsb_threshold_and_qqp(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = [f"{i}\tmain\tf\t2012\t{i}\ts\ts\ta {i}\tb {i}\t{s}" for i, s in enumerate(["5.000", "3.000", "2.999", "0.2"])]
    rows.append("4\tmain\tf\t2012\t4\ts\ts\ta 4\tb 4\textra\t4.0")  # a stray tab: the score is the last field
    _write(tmp_path / "sts-b" / "train.tsv", [head] + rows)
    _write(tmp_path / "sts-b" / "dev.tsv", [head] + rows[:4])
    raw = load_source(str(tmp_path / "sts-b"))
    assert raw.task == "STS-B" and raw.train["label"].tolist() == [1, 1, 0, 0, 1]
    assert raw.dev["label"].tolist() == [1, 1, 0, 0]

    qhead = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    qrows = [f"{i}\t{i}\t{i + 100}\tWhy is \"x\" {i}?\tHow is x {i}?\t{i % 2}" for i in range(6)]
    _write(tmp_path / "qqp" / "train.tsv", [qhead] + qrows)
    _write(tmp_path / "qqp" / "dev.tsv", [qhead] + qrows[:4])
    raw = load_source(str(tmp_path / "QQP".lower()))
    assert raw.task == "QQP" and raw.label_names == ["not_duplicate", "duplicate"]
    assert raw.train["label"].tolist() == [0, 1, 0, 1, 0, 1] and raw.train["text"].iloc[0] == 'Why is "x" 0?'


def test_glue_folder_alias_and_errors(tmp_path):
    _write(tmp_path / "sst2" / "train.tsv", ["sentence\tlabel", "good film\t1", "bad film\t0"])
    _write(tmp_path / "sst2" / "dev.tsv", ["sentence\tlabel", "fine\t1", "awful\t0"])
    assert load_source(str(tmp_path / "sst2")).task == "SST-2"
    assert load_source(str(tmp_path), task="SST-2").task == "SST-2"
    _raises("unknown GLUE task", load_source, str(tmp_path), task="nosuchtask")
    _write(tmp_path / "other" / "train.tsv", ["a\tb"])
    _raises("cannot tell which GLUE task", load_source, str(tmp_path / "other"))
    _write(tmp_path / "bad" / "SST-2" / "train.tsv", ["sentence\tlabel", "good\tmaybe"])
    _write(tmp_path / "bad" / "SST-2" / "dev.tsv", ["sentence\tlabel", "good\t1"])
    _raises("unexpected label", load_source, str(tmp_path / "bad" / "SST-2"))


# ------------------------------------------------------------------------------------------------ files


def _reviews(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({
        "review_body": [f'review "{i}", with a comma' for i in range(n)],
        "title": [f"title {i}" for i in range(n)],
        "stars": ["good" if i % 4 else "bad" for i in range(n)],
    })


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl"])
def test_file_custom_columns(tmp_path, ext):
    df = _reviews()
    path = tmp_path / f"data.{ext}"
    if ext == "csv":
        df.to_csv(path, index=False)
    elif ext == "tsv":
        df.to_csv(path, sep="\t", index=False, quoting=3, escapechar=None)
    else:
        df.to_json(path, orient="records", lines=True)
    raw = load_source(str(path), text_column="review_body", text_pair_column="title", label_column="stars", seed=1)
    assert raw.label_names == ["bad", "good"]  # sorted strings
    assert len(raw.train) == 32 and len(raw.dev) == 8  # 20 % stratified carve
    assert np.bincount(raw.dev["label"]).tolist() == [2, 6]
    both = pd.concat([raw.train, raw.dev])
    assert sorted(both["source_idx"]) == list(range(40))
    row = both.set_index("source_idx").loc[3]
    assert row["text"] == 'review "3", with a comma' and row["text_pair"] == "title 3" and row["label"] == 1


def test_file_int_labels_label_names_and_dev_file(tmp_path):
    train = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    dev = pd.DataFrame({"text": ["d0", "d1", "d2", "d3"], "label": [1, 0, 1, 0]})
    train.to_csv(tmp_path / "train.csv", index=False)
    dev.to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    raw = load_source(str(tmp_path / "train.csv"), dev_source=str(tmp_path / "dev.jsonl"))
    assert raw.label_names == ["0", "1"] and len(raw.train) == 10 and raw.dev["label"].tolist() == [1, 0, 1, 0]
    assert raw.train["text_pair"].isna().all()
    raw = load_source(str(tmp_path / "train.csv"), dev_source=str(tmp_path / "dev.jsonl"), label_names=["neg", "pos"])
    assert raw.label_names == ["neg", "pos"] and raw.train["label"].tolist() == [i % 2 for i in range(10)]
    raw = load_source(str(tmp_path), text_column="text", label_column="label")  # folder: train.csv + dev.jsonl
    assert len(raw.train) == 10 and raw.dev["text"].tolist() == ["d0", "d1", "d2", "d3"]
    # string labels matched to user names keep the user's order
    pd.DataFrame({"text": list("abcdef"), "label": ["pos", "neg"] * 3}).to_csv(tmp_path / "s.csv", index=False)
    raw = load_source(str(tmp_path / "s.csv"), label_names=["pos", "neg"])
    assert raw.label_names == ["pos", "neg"] and sorted(pd.concat([raw.train, raw.dev])["label"]) == [0, 0, 0, 1, 1, 1]


def test_file_errors(tmp_path):
    _raises("not found", load_source, str(tmp_path / "nope.csv"))
    _raises("data source 'sst2' not found.*hf:glue/sst2", load_source, "sst2")
    path = tmp_path / "d.csv"
    _reviews().to_csv(path, index=False)
    msg = _raises("text column 'body' not found", load_source, str(path), text_column="body", label_column="stars")
    assert "review_body, title, stars" in msg
    msg = _raises("label column 'Stars' not found", load_source, str(path), text_column="review_body",
                  label_column="Stars")
    assert "did you mean 'stars'" in msg
    _raises("no text column given", load_source, str(path), label_column="stars")
    msg = _raises("not in label_names", load_source, str(path), text_column="review_body", label_column="stars",
                  label_names=["bad", "fine"])
    assert "'good'" in msg
    _raises("outside 0..1", load_source, str(_write(tmp_path / "i.csv", ["text,label", "a,0", "b,5"])),
            label_names=["x", "y"])
    _raises("empty label", load_source, str(_write(tmp_path / "e.csv", ["text,label", "a,0", "b,", "c,1"])))
    _raises("only one label value", load_source, str(_write(tmp_path / "o.csv", ["text,label", "a,1", "b,1"])))
    _raises("unsupported file type", load_source, str(_write(tmp_path / "x.xml", ["<a/>"])))
    _raises("cannot carve", load_source, str(_write(tmp_path / "c.csv", ["text,label", "a,0", "b,1", "c,1", "d,1"])))


# ------------------------------------------------------------------------------------------------ Hugging Face (offline)


def test_parse_hf():
    assert parse_hf("hf:glue/sst2") == ("glue", "sst2")
    assert parse_hf("hf:imdb") == ("imdb", None)
    assert parse_hf("hf:stanfordnlp/imdb") == ("stanfordnlp/imdb", None)
    assert parse_hf("hf:nyu-mll/glue/mrpc") == ("nyu-mll/glue", "mrpc")
    assert parse_hf("hf:someone/data:cfg") == ("someone/data", "cfg")


def test_hf_source_through_local_json(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [{"text": f"s{i}", "label": i % 2} for i in range(20)]
    for split, part in (("train", rows[:16]), ("validation", rows[16:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    real = datasets.load_dataset
    calls = []

    def fake(name, config=None, **kw):  # a local json "dataset" instead of the Hub
        calls.append((name, config))
        files = {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation")}
        return real("json", data_files=files, cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(datasets, "load_dataset", fake)
    raw = load_source("hf:someone/reviews")
    assert calls == [("someone/reviews", None)]
    assert len(raw.train) == 16 and len(raw.dev) == 4 and raw.label_names == ["0", "1"]
    assert raw.source == "hf:someone/reviews"

    def broken(*a, **kw):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    _raises("cannot load Hugging Face dataset 'hf:imdb': offline", load_source, "hf:imdb")


def test_hf_glue_configs_from_in_memory_datasets():
    datasets = pytest.importorskip("datasets")
    nli = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                             "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})

    def part(labels):
        return datasets.Dataset.from_dict({"premise": [f"p{i}" for i in range(len(labels))],
                                           "hypothesis": [f"h{i}" for i in range(len(labels))], "label": labels},
                                          features=nli)

    dsd = datasets.DatasetDict({"train": part([0, 1, 2, 0, 1, 2, 0, 1]), "validation_matched": part([2, 1, 0, 1]),
                                "test_matched": part([-1, -1])})
    raw = from_hf_dataset(dsd, name="glue", config="mnli")
    assert raw.task == "MNLI" and raw.label_names == ["entailment", "neutral"]
    assert raw.train["label"].tolist() == [0, 1, 0, 1, 0, 1] and raw.train["source_idx"].tolist() == [0, 1, 3, 4, 6, 7]
    assert raw.dev["label"].tolist() == [1, 0, 1] and raw.train["text_pair"].iloc[0] == "h0"

    sst = datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                             "label": datasets.ClassLabel(names=["negative", "positive"])})
    mk = lambda labs: datasets.Dataset.from_dict(  # noqa: E731
        {"sentence": [f"s{i}" for i in range(len(labs))], "idx": list(range(len(labs))), "label": labs}, features=sst)
    dsd = datasets.DatasetDict({"train": mk([0, 1] * 10), "test": mk([-1] * 4)})  # test labels hidden → carve dev
    raw = from_hf_dataset(dsd, name="glue", config="sst2")
    assert raw.label_names == ["negative", "positive"] and len(raw.train) == 16 and len(raw.dev) == 4
    assert raw.train["text_pair"].isna().all()
    _raises("column 'review' not found", from_hf_dataset, dsd, name="glue", config="sst2", text_column="review")


# ------------------------------------------------------------------------------------------------ demo


def test_demo_set():
    raw = load_source("demo")
    assert raw.label_names == ["negative", "positive"] and raw.task == "demo"
    assert len(raw.train) == 1400 and len(raw.dev) == 400
    assert np.bincount(raw.train["label"]).tolist() == [700, 700] and np.bincount(raw.dev["label"]).tolist() == [200, 200]
    texts = pd.concat([raw.train["text"], raw.dev["text"]])
    assert texts.is_unique and texts.str.len().between(10, 400).all()
    assert (REPO / "src" / "layerinf" / "data" / "demo.jsonl").stat().st_size < 300_000


def test_demo_file_matches_generator():
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [json.loads(line) for line in (REPO / "src" / "layerinf" / "data" / "demo.jsonl").read_text().splitlines()]
    assert rows == mod.generate()
    assert load_demo().train["text"].tolist() == [r["text"] for r in rows if r["split"] == "train"]


# ------------------------------------------------------------------------------------------------ prepare


def test_prepare_demo_end_to_end():
    data = prepare("demo", noise_rate=0.2, seed=0, max_train=1000, max_dev=300)
    assert isinstance(data, PreparedData) and data.label_names == ["negative", "positive"] and data.task == "demo"
    for name in ("train", "infl", "test"):
        df = getattr(data, name)
        assert list(df.columns) == SPLIT_COLUMNS
        assert np.array_equal(df["idx"], np.arange(len(df)))
        assert df["idx"].dtype == np.int64 and df["label"].dtype == np.int64 and df["noisy"].dtype == bool
    tr = data.train
    assert len(tr) == 1000 and tr["noisy"].sum() == 200
    assert (tr["label"] != tr["clean_label"]).eq(tr["noisy"]).all()
    assert np.bincount(tr["clean_label"]).tolist() == [500, 500]
    assert len(data.infl) == 150 and len(data.test) == 150
    assert not set(data.infl["source_idx"]) & set(data.test["source_idx"])
    assert not data.infl["noisy"].any() and (data.test["label"] == data.test["clean_label"]).all()
    assert data.meta["counts"]["noisy"] == 200 and data.meta["source"] == "demo"
    again = prepare("demo", noise_rate=0.2, seed=0, max_train=1000, max_dev=300)
    pd.testing.assert_frame_equal(again.train, data.train)
    other = prepare("demo", noise_rate=0.2, seed=1, max_train=1000, max_dev=300)
    assert not other.train["noisy"].equals(data.train["noisy"])


def test_prepare_options_and_errors(tmp_path):
    data = prepare("demo", noise_rate=0.0, max_length=3, infl_equals_test=True)
    assert data.train["noisy"].sum() == 0 and data.train["text"].str.split().str.len().max() <= 3
    assert len(data.infl) == len(data.test) == 400
    _raises("outside", prepare, "demo", noise_rate=1.0)
    _raises("not found", prepare, str(tmp_path / "missing.jsonl"))


def test_save_load_round_trip(tmp_path):
    pd.DataFrame({"a": [f"x{i}" for i in range(30)], "b": [f"y{i}" for i in range(30)],
                  "y": ["p", "q", "r"] * 10}).to_csv(tmp_path / "pairs.csv", index=False)
    for src, kw in (("demo", {}), (str(tmp_path / "pairs.csv"), dict(text_column="a", text_pair_column="b",
                                                                       label_column="y"))):
        data = prepare(src, max_train=100, max_dev=60, seed=2, **kw)
        folder = save_prepared(data, tmp_path / "out" / Path(src).stem)
        assert sorted(p.name for p in folder.iterdir()) == ["infl.parquet", "meta.json", "test.parquet", "train.parquet"]
        back = load_prepared(folder)
        for name in ("train", "infl", "test"):
            pd.testing.assert_frame_equal(getattr(back, name), getattr(data, name))
        assert back.label_names == data.label_names and back.task == data.task
        assert back.meta["counts"] == data.meta["counts"]
    _raises("no meta.json", load_prepared, tmp_path / "nowhere")
    (folder / "test.parquet").unlink()
    _raises("missing", load_prepared, folder)
