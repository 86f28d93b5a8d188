"""Bad input to the data layer: each case gives one LayerinfError line (problem — fix) naming the problem,
never a traceback or a silent wrong result. Plus the empty-text rule, the module split and the layout names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layerinf.data as data
from layerinf.data import load_glue, load_prepared, load_source, make_splits, prepare, read_table, save_prepared
from layerinf.errors import LayerinfError
from layerinf.store.layout import DATA_META_FILE, SPLITS, split_file


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _csv(path: Path, texts, labels) -> Path:
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def _balanced(tmp: Path, name: str = "ok.csv", n: int = 12) -> Path:
    return _csv(tmp / name, [f"t{i}" for i in range(n)], ["x", "y"] * (n // 2))


# ------------------------------------------------------------------------------------------------ cases
# each builder writes what it needs under tmp and returns the call that must fail


def dev_label_not_in_train(tmp):
    _csv(tmp / "train.csv", list("abcdef"), ["x", "y"] * 3)
    _csv(tmp / "dev.csv", list("qrst"), ["x", "maybe", "y", "maybe"])
    return lambda: load_source(str(tmp / "train.csv"), dev_source=str(tmp / "dev.csv"))


def label_name_without_example(tmp):
    return lambda: load_source(str(_balanced(tmp)), label_names=["x", "y", "z"])


def ragged_first_tsv_row(tmp):
    _write(tmp / "t.tsv", "text\tlabel\ngood film\textra\t1\nbad film\t0\nok\t1\nmeh\t0\nx\t1\ny\t0\n")
    return lambda: load_source(str(tmp / "t.tsv"))


def ragged_first_glue_row(tmp):
    _write(tmp / "SST-2" / "train.tsv", "sentence\tlabel\ngood film\textra\t1\nbad film\t0\nok\t1\n")
    _write(tmp / "SST-2" / "dev.tsv", "sentence\tlabel\nfine\t1\nawful\t0\n")
    return lambda: load_source(str(tmp / "SST-2"))


def short_csv_line(tmp):
    _write(tmp / "s.csv", "text,label\na,0\nb,1\nc\nd,1\n")
    return lambda: load_source(str(tmp / "s.csv"))


def ragged_lines_of_headerless_cola(tmp):
    rows = [f"src\t{i % 2}\t\tsentence {i}" for i in range(8)]
    rows[2] += "\tstray"
    rows[5] = "src\t1\tsentence five"
    _write(tmp / "CoLA" / "train.tsv", "\n".join(rows) + "\n")
    _write(tmp / "CoLA" / "dev.tsv", "\n".join(rows[:2]) + "\n")
    return lambda: load_source(str(tmp / "CoLA"))


def header_wider_than_rows(tmp):
    _write(tmp / "h.csv", "text,label,extra\na,0\nb,1\nc,0\nd,1\n")
    return lambda: load_source(str(tmp / "h.csv"))


def max_train_loses_a_class(tmp):
    y = np.array([0] * 500 + [1] * 500 + [2] * 3)
    return lambda: make_splits(y, np.array([0, 1, 2] * 4), max_train=20)


def max_train_leaves_one_example(tmp):
    return lambda: prepare("demo", max_train=3)


def max_dev_too_small_to_halve(tmp):
    return lambda: prepare("demo", max_dev=3)


def max_dev_below_class_count(tmp):
    return lambda: prepare("demo", max_dev=1)


def header_only_csv(tmp):
    return lambda: load_source(str(_write(tmp / "h.csv", "text,label\n")))


def header_only_glue(tmp):
    _write(tmp / "SST-2" / "train.tsv", "sentence\tlabel\n")
    _write(tmp / "SST-2" / "dev.tsv", "sentence\tlabel\nfine\t1\nawful\t0\n")
    return lambda: load_source(str(tmp / "SST-2"))


def glue_no_usable_label(tmp):
    head = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label"
    rows = [f"{i}\t1\t1\tfic\tx\tx\tx\tx\tp {i}\th {i}\tcontradiction\tcontradiction" for i in range(4)]
    _write(tmp / "MNLI" / "train.tsv", "\n".join([head] + rows) + "\n")
    _write(tmp / "MNLI" / "dev_matched.tsv", "\n".join([head] + rows) + "\n")
    return lambda: load_source(str(tmp / "MNLI"))


def all_texts_empty(tmp):
    return lambda: load_source(str(_write(tmp / "e.csv", "text,label\n,0\n  ,1\n,0\n")))


def single_class(tmp):
    return lambda: load_source(str(_csv(tmp / "o.csv", list("abcd"), [1, 1, 1, 1])))


def single_class_with_names(tmp):
    return lambda: load_source(str(_csv(tmp / "o.csv", list("abcd"), [1, 1, 1, 1])), label_names=["neg", "pos"])


def missing_file(tmp):
    return lambda: load_source(str(tmp / "nope.csv"))


def empty_folder(tmp):
    (tmp / "empty").mkdir()
    return lambda: load_source(str(tmp / "empty"))


def folder_without_data_files(tmp):
    _write(tmp / "notes" / "readme.md", "# nothing here\n")
    return lambda: load_source(str(tmp / "notes"))


def missing_glue_folder(tmp):
    return lambda: load_glue(tmp / "nowhere", "sst2")


def unsupported_extension(tmp):
    return lambda: load_source(str(_write(tmp / "d.xlsx", b"PK\x03\x04")))


def binary_file(tmp):
    return lambda: load_source(str(_write(tmp / "b.csv", b"text,label\n\x00\x01\x02\x89PNG\x00")))


def latin1_file(tmp):
    return lambda: load_source(str(_write(tmp / "l.csv", "text,label\nok,1\ncafé,0\n".encode("latin-1"))))


def utf16_file(tmp):
    return lambda: load_source(str(_write(tmp / "u.csv", "text,label\na,1\n".encode("utf-16"))))


def zero_byte_file(tmp):
    return lambda: load_source(str(_write(tmp / "z.csv", b"")))


def malformed_jsonl_line(tmp):
    lines = ['{"text": "a", "label": 0}', '{"text": "b", "label": 1}', "", '{"text": "c", label: 0}']
    return lambda: load_source(str(_write(tmp / "m.jsonl", "\n".join(lines) + "\n")))


def jsonl_line_not_object(tmp):
    return lambda: load_source(str(_write(tmp / "m.jsonl", '{"text": "a", "label": 0}\n[1, 2]\n')))


def corrupt_parquet(tmp):
    return lambda: load_source(str(_write(tmp / "p.parquet", b"not a parquet file")))


def folder_as_dev_file(tmp):
    (tmp / "devdir").mkdir()
    return lambda: load_source(str(_balanced(tmp)), dev_source=str(tmp / "devdir"))


def pair_column_equals_text(tmp):
    return lambda: load_source(str(_balanced(tmp)), text_column="text", text_pair_column="text")


def column_name_not_text(tmp):
    return lambda: load_source(str(_balanced(tmp)), text_column=3)


def label_names_as_string(tmp):
    return lambda: prepare("demo", label_names="negative,positive")


def meta_not_an_object(tmp):
    folder = tmp / "prepared"
    save_prepared(prepare("demo", max_train=100, max_dev=40), folder)
    (folder / DATA_META_FILE).write_text("[1, 2]")
    return lambda: load_prepared(folder)


CASES = [  # (builder, regex the message must match)
    (dev_label_not_in_train, r"dev label\(s\) 'maybe' .* never occur in its training data"),
    (label_name_without_example, r"label name\(s\) 'z' .* have no training example"),
    (ragged_first_tsv_row, r"line 2 of .*t\.tsv has the wrong number of fields \(3 where the header has 2"),
    (ragged_first_glue_row, r"line 2 of .*train\.tsv has the wrong number of fields \(3 where the header has 2"),
    (short_csv_line, r"line 4 of .*s\.csv has the wrong number of fields \(1 where the header has 2"),
    (ragged_lines_of_headerless_cola, r"lines 3, 6 of .*train\.tsv have the wrong number of fields \(3 or 5 where "
                                      r"line 1 has 4.* — remove the stray tabs .*; add the missing fields"),
    (header_wider_than_rows, r"every data line of .*h\.csv has 2 fields but the header has 3"),
    (max_train_loses_a_class, r"max_train=20 keeps no example of class\(es\) \[2\]"),
    (max_train_leaves_one_example, r"train split have only 1 example.*after max_train=3"),
    (max_dev_too_small_to_halve, r"dev split have only 1 example.*after max_dev=3.* — raise max_dev to at least"),
    (max_dev_below_class_count, r"max_dev=1: 1 examples cannot cover the 2 classes"),
    (header_only_csv, r"h\.csv has no rows"),
    (header_only_glue, r"train\.tsv has no data rows \(only a header\)"),
    (glue_no_usable_label, r"no row with a usable GLUE MNLI label"),
    (all_texts_empty, r"every one of the 3 row\(s\) of .*e\.csv has an empty text"),
    (single_class, r"only one label value .* needs at least 2 classes"),
    (single_class_with_names, r"single class \('pos'\) — a classifier needs at least 2 classes"),
    (missing_file, r"data source .*nope\.csv' not found"),
    (empty_folder, r"cannot tell which GLUE task folder .*empty is, and it holds no train file .*it holds: nothing"),
    (folder_without_data_files, r"holds no train file .*it holds: readme\.md"),
    (missing_glue_folder, r"GLUE folder .*nowhere not found"),
    (unsupported_extension, r"unsupported file type '\.xlsx'"),
    (binary_file, r"b\.csv looks like a binary file"),
    (latin1_file, r"l\.csv is not UTF-8 text: line 3 holds byte 0xe9"),
    (utf16_file, r"u\.csv is UTF-16 text"),
    (zero_byte_file, r"z\.csv is empty \(0 bytes\)"),
    (malformed_jsonl_line, r"line 4 of .*m\.jsonl is not valid JSON"),
    (jsonl_line_not_object, r"line 2 of .*m\.jsonl is a JSON list, not an object"),
    (corrupt_parquet, r"cannot parse .*p\.parquet as Parquet"),
    (folder_as_dev_file, r"devdir is a folder, not a data file"),
    (pair_column_equals_text, r"text_pair_column 'text' is the same column as the text column"),
    (column_name_not_text, r"text_column=3 is not a column name"),
    (label_names_as_string, r"label_names='negative,positive' is not a list of names"),
    (meta_not_an_object, r"meta\.json holds a JSON list, not an object"),
]


def _one_line(fn, match: str) -> str:
    with pytest.raises(LayerinfError, match=match) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and " — " in msg, msg  # one line: problem — fix
    assert info.value.problem and info.value.fix
    return msg


@pytest.mark.parametrize("build,match", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(tmp_path, build, match):
    _one_line(build(tmp_path), match)


BAD_OPTIONS = [  # prepare() options: (keyword, value, regex)
    ("noise_rate", -0.1, r"noise rate -0\.1 is outside \[0, 1\)"),
    ("noise_rate", 1.0, r"noise rate 1\.0 is outside \[0, 1\)"),
    ("noise_rate", float("nan"), r"noise rate nan is outside \[0, 1\)"),
    ("noise_rate", "0.2", r"noise_rate='0\.2' is not a number"),
    ("noise_rate", False, r"noise_rate=False is not a number"),
    ("max_train", 0, r"max_train=0 is below 1"),
    ("max_train", -5, r"max_train=-5 is below 1"),
    ("max_train", 2.5, r"max_train=2\.5 is not a whole number"),
    ("max_train", True, r"max_train=True is a bool, not a number"),
    ("max_train", "100", r"max_train='100' is not a whole number"),
    ("max_dev", 0, r"max_dev=0 is below 1"),
    ("max_dev", 1.5, r"max_dev=1\.5 is not a whole number"),
    ("max_dev", False, r"max_dev=False is a bool"),
    ("seed", -1, r"seed=-1 is below 0"),
    ("seed", True, r"seed=True is a bool"),
    ("seed", 0.5, r"seed=0\.5 is not a whole number"),
    ("max_length", 0, r"max_length=0 is below 1"),
    ("max_length", True, r"max_length=True is a bool"),
    ("dev_fraction", 0.0, r"dev_fraction=0\.0 is outside \(0, 1\)"),
    ("dev_fraction", 1, r"dev_fraction=1\.0 is outside \(0, 1\)"),
    ("dev_fraction", True, r"dev_fraction=True is not a number"),
    ("infl_equals_test", "yes", r"infl_equals_test='yes' is not true or false"),
]


@pytest.mark.parametrize("key,value,match", BAD_OPTIONS, ids=[f"{k}={v!r}" for k, v, _ in BAD_OPTIONS])
def test_bad_option(key, value, match):
    _one_line(lambda: prepare("demo", **{key: value}), match)


def test_bad_options_of_lower_level_calls(tmp_path):
    y = np.arange(40) % 2
    _one_line(lambda: make_splits(y, y, max_train=True), r"max_train=True is a bool")
    _one_line(lambda: make_splits(y, y, max_dev=0.5), r"max_dev=0\.5 is not a whole number")
    _one_line(lambda: make_splits(y, y, seed=-3), r"seed=-3 is below 0")
    _one_line(lambda: data.inject_noise(y, True), r"noise rate True is a bool")
    _one_line(lambda: data.carve_dev(pd.DataFrame({"label": y}), 1.5), r"dev_fraction=1\.5 is outside \(0, 1\)")
    path = _balanced(tmp_path)
    _one_line(lambda: load_source(str(path), seed=-1), r"seed=-1 is below 0")  # carving a dev set needs it
    _one_line(lambda: load_source(str(path), dev_fraction=2), r"dev_fraction=2\.0 is outside")
    _one_line(lambda: load_source(12), r"no data source given \(got int 12\)")


# ------------------------------------------------------------------------------------------------ valid input


def test_valid_caps_unchanged():
    """Whole-number floats are taken as ints (as in the config) and give the same splits."""
    a = prepare("demo", max_train=200, max_dev=60, seed=3)
    b = prepare("demo", max_train=200.0, max_dev=np.int64(60), seed=np.int32(3))
    for name in SPLITS:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert b.meta["max_train"] == 200 and isinstance(b.meta["max_train"], int)


def test_empty_texts_are_dropped_with_a_warning(tmp_path):
    path = _write(tmp_path / "e.csv", "text,label\na,0\n,1\n  ,0\nb,1\nc,0\nd,1\ne,0\nf,1\ng,0\nh,1\n")
    with pytest.warns(UserWarning, match=r"e\.csv: dropped 2 of 10 row\(s\) with an empty text \(row 1, 2;"):
        raw = load_source(str(path))
    both = pd.concat([raw.train, raw.dev])
    assert sorted(both["source_idx"]) == [0, 3, 4, 5, 6, 7, 8, 9]  # original row numbers kept
    assert (both["text"].str.strip() != "").all()

    pairs = pd.DataFrame({"a": [f"q{i}" for i in range(10)], "b": [f"r{i}" for i in range(10)], "y": [0, 1] * 5})
    pairs.loc[[2, 7], "b"] = ""
    pairs.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    with pytest.warns(UserWarning, match=r"dropped 2 of 10 row\(s\) with an empty text or text pair \(row 2, 7;"):
        raw = load_source(str(tmp_path / "p.jsonl"), text_column="a", text_pair_column="b", label_column="y")
    assert 2 not in set(raw.train["source_idx"]) | set(raw.dev["source_idx"])

    _write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood\t1\n\t0\nbad\t0\n \t1\nok\t1\nmeh\t0\n")
    _write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\nfine\t1\nawful\t0\n")
    with pytest.warns(UserWarning, match=r"train\.tsv: dropped 2 of 6 row\(s\) with an empty text \(row 1, 3;"):
        raw = load_source(str(tmp_path / "SST-2"))
    assert raw.train["source_idx"].tolist() == [0, 2, 4, 5]


def test_hf_empty_texts_and_hidden_labels():
    datasets = pytest.importorskip("datasets")
    texts = [f"s{i}" for i in range(12)]
    texts[3] = ""
    train = datasets.Dataset.from_dict({"text": texts, "label": [0, 1] * 6})
    dev = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]})
    with pytest.warns(UserWarning, match=r"dropped 1 of 12 row\(s\) with an empty text \(row 3;"):
        raw = data.from_hf_dataset(datasets.DatasetDict({"train": train, "validation": dev}), name="toy")
    assert 3 not in raw.train["source_idx"].tolist() and len(raw.train) == 11
    hidden = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [-1, -1]})
    _one_line(lambda: data.from_hf_dataset(datasets.DatasetDict({"train": hidden}), name="toy"),
              r"hf:toy \(train\) has no labelled row")
    odd = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 2]})
    with pytest.warns(UserWarning, match="dropped 1 of 12"):
        _one_line(lambda: data.from_hf_dataset(datasets.DatasetDict({"train": train, "validation": odd}), name="toy"),
                  r"dev label\(s\) '2' of hf:toy never occur in its training data")


def test_lenient_glue_ragged_first_row_is_repaired(tmp_path):
    """STS-B/QQP/MNLI keep the leading fields and the label of a line with stray tabs — the first line too
    (pandas used to read its extra field as an index and shift every column)."""
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = [f"{i}\tmain\tf\t2012\t{i}\ts\ts\ta {i}\tb {i}\t{s}" for i, s in enumerate(["1.0", "3.5", "0.5", "4.0"])]
    rows[0] = "0\tmain\tf\t2012\t0\ts\ts\ta 0\tb 0\tstray\t4.5"
    _write(tmp_path / "STS-B" / "train.tsv", "\n".join([head] + rows) + "\n")
    _write(tmp_path / "STS-B" / "dev.tsv", "\n".join([head] + rows) + "\n")
    raw = load_source(str(tmp_path / "STS-B"))
    assert raw.train["text"].tolist() == ["a 0", "a 1", "a 2", "a 3"]
    assert raw.train["text_pair"].tolist() == ["b 0", "b 1", "b 2", "b 3"]
    assert raw.train["label"].tolist() == [1, 1, 0, 1]


def test_long_csv_fields_are_fine(tmp_path):
    """The field-count check must not trip over long texts (the csv module's default field limit is 128 KiB)."""
    long = "word " * 40000
    path = _csv(tmp_path / "long.csv", [long, "b", "c", "d", "e", "f"], ["x", "y"] * 3)
    raw = load_source(str(path), dev_source=str(path))
    assert raw.train["text"].str.len().max() == len(long)
    assert read_table(path).shape == (6, 2)


# ------------------------------------------------------------------------------------------------ structure


def test_public_names_and_old_import_paths():
    for name in data.__all__:
        assert getattr(data, name) is not None
    from layerinf.data import loaders

    for name in ("RawData", "COLUMNS", "GLUE_TASKS", "GlueTask", "carve_dev", "encode_labels", "from_hf_dataset",
                 "glue_task_key", "load_glue", "load_hf", "load_source", "load_table", "parse_hf", "read_glue_tsv",
                 "read_table", "SOURCE_HELP", "_frame"):
        assert hasattr(loaders, name), name
    assert loaders.load_table is data.load_table and loaders.RawData is data.RawData
    src = Path(data.__file__).parent
    for module in src.glob("*.py"):
        assert len(module.read_text(encoding="utf-8").splitlines()) < 400, module.name


def test_saved_file_names_come_from_the_layout(tmp_path):
    folder = save_prepared(prepare("demo", max_train=100, max_dev=40), tmp_path / "d")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*map(split_file, SPLITS), DATA_META_FILE])
    assert data.SPLITS == SPLITS
    meta = json.loads((folder / DATA_META_FILE).read_text())
    assert meta["format"] == data.FORMAT and meta["counts"]["train"] == 100
