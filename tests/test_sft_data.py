"""Instruction-tuning (SFT) data: loading prompt/response and chat-messages sources, the one-line errors,
seeded splits, response noise (label / swap) with its ground-truth mask, storage, and response-only
tokenisation (``encode_sft``) with and without a chat template."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerinf.data.sft import DEMO_SFT_PROMPT, RAW_COLUMNS, SFTRaw, demo_sft_rows, from_hf_sft, load_sft
from layerinf.data.sft_prepared import (
    SFT_COLUMNS,
    class_words,
    inject_sft_noise,
    is_sft_folder,
    label_noise,
    load_sft_prepared,
    prepare_sft,
    save_sft_prepared,
    sft_splits,
    swap_noise,
)
from layerinf.engine.sft_batching import IGNORE_INDEX, encode_sft, sft_encoding_stats
from layerinf.errors import LayerinfError


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pairs(n: int = 10, words: bool = False):
    return [{"prompt": f"question {i}?", "response": ["yes", "no"][i % 2] if words else f"answer number {i}."}
            for i in range(n)]


def _chat(i: int, system: bool = False):
    turns = [{"role": "system", "content": "be brief"}] if system else []
    return turns + [{"role": "user", "content": f"first {i}"}, {"role": "assistant", "content": f"ok {i}"},
                    {"role": "user", "content": f"second {i}"}, {"role": "assistant", "content": f"reply {i}"}]


def _fails(call, *needles):
    with pytest.raises(LayerinfError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text.strip()
    for needle in needles:
        assert needle in text, text
    return text


# ------------------------------------------------------------------------------------------------ loading


def test_jsonl_prompt_response(tmp_path):
    raw = load_sft(_jsonl(tmp_path / "d.jsonl", _pairs(10)), seed=0)
    assert isinstance(raw, SFTRaw)
    assert list(raw.train.columns) == RAW_COLUMNS and list(raw.dev.columns) == RAW_COLUMNS
    assert len(raw.train) == 8 and len(raw.dev) == 2
    both = pd.concat([raw.train, raw.dev]).sort_values("source_idx")
    assert both["source_idx"].tolist() == list(range(10))
    row = both.iloc[3]
    assert row["prompt"] == "question 3?" and row["response"] == "answer number 3."
    assert json.loads(row["messages"]) == [{"role": "user", "content": "question 3?"}]
    assert raw.info["layout"] == "prompt_response"
    again = load_sft(tmp_path / "d.jsonl", seed=0)
    pd.testing.assert_frame_equal(raw.dev, again.dev)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_formats(tmp_path, suffix):
    df = pd.DataFrame(_pairs(8))
    path = tmp_path / f"d{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    raw = load_sft(path)
    got = pd.concat([raw.train, raw.dev]).sort_values("source_idx")
    assert got["response"].tolist() == df["response"].tolist()
    assert got["prompt"].tolist() == df["prompt"].tolist()


def test_alpaca_aliases_append_input(tmp_path):
    rows = [{"instruction": f"do {i}", "input": "" if i % 2 else f"data {i}", "output": f"done {i}"} for i in range(6)]
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    raw = load_sft(tmp_path / "a.csv")
    got = pd.concat([raw.train, raw.dev]).set_index("source_idx").sort_index()
    assert got.loc[0, "prompt"] == "do 0\n\ndata 0"
    assert got.loc[1, "prompt"] == "do 1"
    assert got.loc[2, "response"] == "done 2"
    assert raw.info["columns"] == {"prompt": "instruction", "response": "output", "input": "input"}


def test_explicit_columns_and_numbers(tmp_path):
    rows = [{"q": f"q{i}", "a": i % 3, "other": "x"} for i in range(6)]
    raw = load_sft(_jsonl(tmp_path / "n.jsonl", rows), prompt_column="q", response_column="a")
    assert set(pd.concat([raw.train, raw.dev])["response"]) == {"0", "1", "2"}


def test_messages_jsonl(tmp_path):
    raw = load_sft(_jsonl(tmp_path / "m.jsonl", [{"messages": _chat(i, system=i == 0)} for i in range(6)]))
    assert raw.info["layout"] == "messages"
    got = pd.concat([raw.train, raw.dev]).set_index("source_idx").sort_index()
    assert got.loc[0, "response"] == "reply 0" and got.loc[0, "prompt"] == "second 0"
    turns = json.loads(got.loc[0, "messages"])
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[-1]["content"] == "second 0"


def test_messages_as_json_text_in_csv_and_sharegpt(tmp_path):
    pd.DataFrame({"chat": [json.dumps(_chat(i)) for i in range(5)]}).to_csv(tmp_path / "m.csv", index=False)
    raw = load_sft(tmp_path / "m.csv", messages_column="chat")
    assert sorted(pd.concat([raw.train, raw.dev])["response"]) == [f"reply {i}" for i in range(5)]
    share = [{"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": f"yo {i}"}]}
             for i in range(5)]
    raw = load_sft(_jsonl(tmp_path / "s.jsonl", share))
    got = pd.concat([raw.train, raw.dev]).set_index("source_idx").sort_index()
    assert got.loc[2, "prompt"] == "hi 2" and got.loc[2, "response"] == "yo 2"
    assert json.loads(got.loc[2, "messages"]) == [{"role": "user", "content": "hi 2"}]


def test_parquet_messages_column(tmp_path):
    pd.DataFrame({"messages": [_chat(i) for i in range(5)]}).to_parquet(tmp_path / "m.parquet", index=False)
    raw = load_sft(tmp_path / "m.parquet")
    assert sorted(pd.concat([raw.train, raw.dev])["response"]) == [f"reply {i}" for i in range(5)]


def test_dev_source_and_folder(tmp_path):
    _jsonl(tmp_path / "f" / "train.jsonl", _pairs(6))
    _jsonl(tmp_path / "f" / "dev.jsonl", _pairs(3))
    raw = load_sft(tmp_path / "f")
    assert len(raw.train) == 6 and len(raw.dev) == 3
    assert raw.dev["source_idx"].tolist() == [0, 1, 2]
    raw = load_sft(tmp_path / "f" / "train.jsonl", dev_source=tmp_path / "f" / "dev.jsonl")
    assert len(raw.train) == 6 and len(raw.dev) == 3


def test_demo_sft():
    rows = demo_sft_rows()
    assert rows[0]["prompt"].startswith("Review: ")
    assert rows[0]["prompt"].endswith("positive or negative? Answer with one word.")
    raw = load_sft("demo-sft")
    assert len(raw.train) == sum(r["split"] == "train" for r in rows)
    assert len(raw.dev) == sum(r["split"] == "dev" for r in rows)
    assert set(raw.train["response"]) == {"negative", "positive"}
    assert raw.train["prompt"].iloc[0] == rows[int(raw.train["source_idx"].iloc[0])]["prompt"]
    assert "{text}" in DEMO_SFT_PROMPT


def test_hf_dataset_dict_in_memory():
    datasets = pytest.importorskip("datasets")
    dsd = datasets.DatasetDict({"train": datasets.Dataset.from_list(_pairs(6)),
                                "validation": datasets.Dataset.from_list(_pairs(2))})
    raw = from_hf_sft(dsd, name="toy")
    assert len(raw.train) == 6 and len(raw.dev) == 2 and raw.info["dev_origin"] == "validation"


# ------------------------------------------------------------------------------------------------ errors


def test_error_no_response_column(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "reply_text": "b"}] * 5)
    _fails(lambda: load_sft(path), "no response column", "prompt, reply_text", "response_column")


def test_error_unknown_named_column(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", _pairs(5))
    _fails(lambda: load_sft(path, response_column="Prompt"), "'Prompt' not found", "did you mean 'prompt'")
    _fails(lambda: load_sft(path, messages_column="m", prompt_column="prompt"), "cannot be combined")


def test_error_empty_responses_name_rows(tmp_path):
    rows = _pairs(8)
    rows[2]["response"] = "   "
    rows[5]["response"] = None
    text = _fails(lambda: load_sft(_jsonl(tmp_path / "e.jsonl", rows)), "2 row(s)", "empty response", "row 2, 5")
    assert "'response'" in text
    rows = _pairs(8)
    rows[1]["prompt"] = ""
    _fails(lambda: load_sft(_jsonl(tmp_path / "p.jsonl", rows)), "1 row(s)", "empty prompt", "row 1")


def test_error_bad_messages(tmp_path):
    good = [{"messages": _chat(i)} for i in range(5)]
    cases = {
        "not a list": ({"messages": "just text"}, "no list of messages"),
        "last user": ({"messages": [{"role": "user", "content": "hi"}]}, "do not end with an assistant turn"),
        "bad turn": ({"messages": [{"speaker": "x"}, {"role": "assistant", "content": "a"}]}, "not {role, content}"),
        "no prompt": ({"messages": [{"role": "assistant", "content": "a"}]}, "no prompt turn"),
        "empty reply": ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
                        "empty response"),
    }
    for name, (bad, needle) in cases.items():
        path = _jsonl(tmp_path / f"{name}.jsonl", good[:3] + [bad] + good[3:])
        _fails(lambda: load_sft(path), needle, "row 3")


def test_error_empty_and_tiny_files(tmp_path):
    (tmp_path / "zero.jsonl").write_bytes(b"")
    _fails(lambda: load_sft(tmp_path / "zero.jsonl"), "empty")
    (tmp_path / "head.csv").write_text("prompt,response\n", encoding="utf-8")
    _fails(lambda: load_sft(tmp_path / "head.csv"), "no rows")
    _fails(lambda: load_sft(_jsonl(tmp_path / "three.jsonl", _pairs(3))), "3 usable row(s)", "at least 4")
    _jsonl(tmp_path / "g" / "train.jsonl", _pairs(6))
    _jsonl(tmp_path / "g" / "dev.jsonl", _pairs(1))
    _fails(lambda: load_sft(tmp_path / "g"), "dev part", "1 row(s)")


def test_error_sources():
    _fails(lambda: load_sft("no/such/file.jsonl"), "not found", "demo-sft")
    _fails(lambda: load_sft("demo"), "'demo-sft'")
    _fails(lambda: load_sft(""), "no SFT data source")
    _fails(lambda: load_sft("demo-sft", dev_fraction=1.5), "dev_fraction")


# ------------------------------------------------------------------------------------------------ splits


def test_splits_seeded_capped_and_disjoint():
    a = sft_splits(100, 41, max_train=30, max_dev=21, seed=3)
    b = sft_splits(100, 41, max_train=30, max_dev=21, seed=3)
    c = sft_splits(100, 41, max_train=30, max_dev=21, seed=4)
    for x, y in zip((a.train, a.infl, a.test), (b.train, b.infl, b.test)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train, c.train)
    assert len(a.train) == 30 and len(a.infl) == 11 and len(a.test) == 10
    assert not set(a.infl) & set(a.test)
    assert np.all(np.diff(a.train) > 0)
    full = sft_splits(10, 4, max_train=None, max_dev=None)
    assert full.train.tolist() == list(range(10)) and sorted(full.infl.tolist() + full.test.tolist()) == [0, 1, 2, 3]
    _fails(lambda: sft_splits(10, 4, max_dev=1), "max_dev")


def test_prepare_sft_tables_and_determinism():
    d = prepare_sft("demo-sft", max_train=200, max_dev=50, noise_rate=0.2, seed=0)
    for name in ("train", "infl", "test"):
        df = getattr(d, name)
        assert list(df.columns) == SFT_COLUMNS
        assert df["idx"].tolist() == list(range(len(df)))
    assert len(d.train) == 200 and len(d.infl) == 25 and len(d.test) == 25
    assert not d.infl["noisy"].any() and (d.infl["response"] == d.infl["clean_response"]).all()
    assert d.meta["noise_kind"] == "label" and d.class_words == ["negative", "positive"]
    again = prepare_sft("demo-sft", max_train=200, max_dev=50, noise_rate=0.2, seed=0)
    pd.testing.assert_frame_equal(d.train, again.train)
    pd.testing.assert_frame_equal(d.test, again.test)


# ------------------------------------------------------------------------------------------------ noise


def test_label_noise_mask_rate_and_flip():
    d = prepare_sft("demo-sft", max_train=300, noise_rate=0.3, noise_kind="label", seed=1)
    tr = d.train
    assert tr["noisy"].sum() == 90 == d.meta["counts"]["noisy"]
    changed = (tr["response"] != tr["clean_response"]).to_numpy()
    np.testing.assert_array_equal(changed, tr["noisy"].to_numpy())
    assert set(tr["response"]) <= {"negative", "positive"}
    other = prepare_sft("demo-sft", max_train=300, noise_rate=0.3, noise_kind="label", seed=2)
    assert not np.array_equal(other.train["noisy"].to_numpy(), tr["noisy"].to_numpy())


def test_label_noise_many_classes_uniform_other():
    words = ["cat", "dog", "big bird"]
    clean = [words[i % 3] for i in range(3000)]
    noisy, mask = label_noise(clean, 0.5, words, seed=0)
    assert mask.sum() == 1500
    pairs = Counter((c, n) for c, n, m in zip(clean, noisy, mask) if m)
    assert all(c != n for c, n in pairs)
    assert len(pairs) == 6 and min(pairs.values()) > 150  # every (clean, other) pair occurs
    assert class_words(clean) == sorted(words)
    assert class_words(["a b c d", "e"]) is None and class_words(["same"] * 4) is None


def test_label_noise_refuses_free_form(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", _pairs(20))
    _fails(lambda: prepare_sft(path, noise_kind="label"), "noise_kind='label'", "swap")
    assert prepare_sft(path, noise_kind="auto", noise_rate=0.25).meta["noise_kind"] == "swap"


def test_swap_noise_never_self_or_identical():
    clean = [f"r{i % 7}" for i in range(200)]  # repeated strings: identical responses must never be swapped in
    noisy, mask = swap_noise(clean, 0.4, seed=5)
    assert mask.sum() == 80
    for c, n, m in zip(clean, noisy, mask):
        assert (c != n) if m else (c == n)
    chosen = np.flatnonzero(mask)
    assert Counter(noisy[i] for i in chosen) == Counter(clean[i] for i in chosen)  # a permutation of the chosen
    again, mask2 = swap_noise(clean, 0.4, seed=5)
    assert again == noisy and np.array_equal(mask, mask2)
    assert swap_noise(clean, 0.0)[1].sum() == 0


def test_swap_noise_binary_and_impossible():
    clean = ["yes", "no"] * 50
    noisy, mask = swap_noise(clean, 0.2, seed=0)  # redraws until the chosen rows can trade
    assert mask.sum() == 20 and all(c != n for c, n, m in zip(clean, noisy, mask) if m)
    _fails(lambda: swap_noise(["same"] * 10, 0.5), "swap noise", "'same'")
    _fails(lambda: swap_noise([f"r{i}" for i in range(10)], 0.1), "at least 2 noisy rows")


def test_swap_noise_on_prepared_free_form(tmp_path):
    d = prepare_sft(_jsonl(tmp_path / "f.jsonl", _pairs(50)), noise_kind="swap", noise_rate=0.2, seed=0)
    tr = d.train
    assert tr["noisy"].sum() == int(0.2 * len(tr))
    assert (tr.loc[tr["noisy"], "response"] != tr.loc[tr["noisy"], "clean_response"]).all()
    assert set(tr.loc[tr["noisy"], "response"]) <= set(tr["clean_response"])
    assert d.class_words is None


def test_noise_argument_errors():
    _fails(lambda: prepare_sft("demo-sft", noise_rate=1.0), "outside [0, 1)")
    _fails(lambda: prepare_sft("demo-sft", noise_kind="flip"), "noise_kind='flip'")
    _fails(lambda: inject_sft_noise(["a", "b"], True), "bool")


# ------------------------------------------------------------------------------------------------ storage


def test_save_load_round_trip(tmp_path):
    d = prepare_sft("demo-sft", max_train=40, max_dev=10, seed=0)
    save_sft_prepared(d, tmp_path / "data")
    assert is_sft_folder(tmp_path / "data")
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]
    back = load_sft_prepared(tmp_path / "data")
    for name in ("train", "infl", "test"):
        pd.testing.assert_frame_equal(getattr(d, name), getattr(back, name))
    assert back.meta["class_words"] == d.meta["class_words"] and back.class_words == ["negative", "positive"]


def test_load_refuses_classification_folder(tmp_path):
    from layerinf.data import prepare, save_prepared

    save_prepared(prepare("demo", max_train=20, max_dev=10), tmp_path / "cls")
    assert not is_sft_folder(tmp_path / "cls") and not is_sft_folder(tmp_path / "none")
    _fails(lambda: load_sft_prepared(tmp_path / "cls"), "not SFT data")
    _fails(lambda: load_sft_prepared(tmp_path / "none"), "no meta.json")


# ------------------------------------------------------------------------------------------------ encode_sft


@pytest.fixture(scope="module")
def tok():
    from layerinf.model import load_tokenizer

    return load_tokenizer("minilm")


def _df(prompts, responses):
    return pd.DataFrame({"idx": np.arange(len(prompts)), "source_idx": np.arange(len(prompts)) + 10,
                         "messages": [json.dumps([{"role": "user", "content": p}]) for p in prompts],
                         "prompt": prompts, "response": responses})


def _plain_parts(tok, prompt, response):
    body = tok(prompt + "\n", add_special_tokens=False)["input_ids"]
    return [tok.cls_token_id] + body, tok(response, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]


def test_encode_plain_masks_prompt_tokens(tok):
    df = _df(["is this good?", "a much longer question about the film"], ["positive", "not at all good"])
    enc = encode_sft(df, tok, class_words=None)
    assert tok.chat_template is None
    for i, f in enumerate(enc.features):
        prompt, reply = _plain_parts(tok, df["prompt"][i], df["response"][i])
        assert f["input_ids"] == prompt + reply
        assert f["token_labels"] == [IGNORE_INDEX] * len(prompt) + reply
        assert f["attention_mask"] == [1] * len(prompt + reply)
    assert enc.labels.tolist() == [0, 0] and enc.index.tolist() == [0, 1]
    assert enc.padding_side == tok.padding_side
    batch = enc.collate(np.array([0, 1]))
    lab, att = batch["token_labels"].numpy(), batch["attention_mask"].numpy()
    for r, f in enumerate(enc.features):  # with padding masked out, the loss positions are the response tokens
        picked = lab[r][(att[r] == 1) & (lab[r] != IGNORE_INDEX)]
        assert picked.tolist() == [t for t in f["token_labels"] if t != IGNORE_INDEX]


def test_encode_separate_caps(tok):
    prompt = "one two three four five six seven eight nine ten"
    response = "alpha beta gamma delta epsilon"
    full_prompt, full_reply = _plain_parts(tok, prompt, response)
    enc = encode_sft(_df([prompt], [response]), tok, max_prompt_length=5, max_response_length=3)
    f = enc.features[0]
    assert f["input_ids"][:5] == [tok.cls_token_id] + full_prompt[-4:]  # left cut, [CLS] kept
    assert f["input_ids"][5:] == full_reply[:3]  # right cut
    assert f["token_labels"] == [IGNORE_INDEX] * 5 + full_reply[:3]
    stats = sft_encoding_stats(_df([prompt], [response]), tok, max_prompt_length=5, max_response_length=3)
    assert stats["prompt_truncated"] == 1 and stats["response_truncated"] == 1
    one = encode_sft(_df([prompt], [response]), tok, max_prompt_length=1).features[0]
    assert one["input_ids"][0] == full_prompt[-1]
    _fails(lambda: encode_sft(_df([prompt], [response]), tok, max_response_length=0), "max_response_length")


def test_encode_empty_response_names_row(tok):
    df = _df(["fine", "odd"], ["yes", "\u200b"])  # a zero-width space: text to Python, nothing to the tokenizer
    _fails(lambda: encode_sft(df, tok), "row 1 (source row 11)", "empty after tokenisation")
    _fails(lambda: encode_sft(df.iloc[:0], tok), "empty split")


def test_encode_class_labels(tok):
    df = _df(["a", "b", "c"], ["positive", "negative", "positive"])
    assert encode_sft(df, tok, class_words=["negative", "positive"]).labels.tolist() == [1, 0, 1]
    _fails(lambda: encode_sft(df, tok, class_words=["yes", "no"]), "not among the class words")


def test_encode_chat_template_on_requires_one(tok):
    _fails(lambda: encode_sft(_df(["a"], ["b"]), tok, chat_template="on"), "no chat template",
           "--chat-template off")
    _fails(lambda: encode_sft(_df(["a"], ["b"]), tok, chat_template="maybe"), "chat_template='maybe'")


SIMPLE_TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} ; {% endfor %}"
                   "{% if add_generation_prompt %}[assistant] {% endif %}")
# renders the assistant turn differently from its generation prompt: the prefix check must fail
ODD_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}(bot) {% else %}[{{ m['role'] }}] "
                "{% endif %}{{ m['content'] }} ; {% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")


def test_encode_with_chat_template(tok, monkeypatch):
    monkeypatch.setattr(tok, "chat_template", SIMPLE_TEMPLATE, raising=False)
    df = _df(["is it good?"], ["positive"])
    df.loc[0, "messages"] = json.dumps([{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "is it good?"}])
    enc = encode_sft(df, tok)  # auto: the template is used
    f = enc.features[0]
    prompt = tok.apply_chat_template(json.loads(df["messages"][0]), add_generation_prompt=True, tokenize=True,
                                     return_dict=False)
    n_prompt = sum(t == IGNORE_INDEX for t in f["token_labels"])
    assert f["input_ids"][:n_prompt] == list(prompt)
    reply = [t for t in f["token_labels"] if t != IGNORE_INDEX]
    assert tok.decode(reply).replace(" ", "") == "positive;"
    assert sft_encoding_stats(df, tok)["chat_template"] is True
    plain = encode_sft(df, tok, chat_template="off").features[0]  # off: the turns' texts, no template
    assert tok.decode(plain["input_ids"], skip_special_tokens=True) == "be brief is it good? positive"
    short = encode_sft(df, tok, max_prompt_length=4).features[0]
    assert short["input_ids"][:4] == list(prompt)[-4:]


def test_encode_template_prefix_mismatch_falls_back(tok, monkeypatch):
    monkeypatch.setattr(tok, "chat_template", ODD_TEMPLATE, raising=False)
    df = _df(["is it good?"], ["positive"])
    f = encode_sft(df, tok, chat_template="on").features[0]
    reply = [t for t in f["token_labels"] if t != IGNORE_INDEX]
    assert reply == tok("positive", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    assert sft_encoding_stats(df, tok, chat_template="on")["fallback_rows"] == 1


@pytest.mark.slow
def test_encode_smollm2_chat_template(smollm2):
    from layerinf.model import load_tokenizer

    smol = load_tokenizer(smollm2)  # a loader error is a failure (see conftest)
    d = prepare_sft("demo-sft", max_train=8, max_dev=4, seed=0)
    enc = encode_sft(d.train, smol, class_words=d.class_words)
    for i, f in enumerate(enc.features):
        reply = [t for t in f["token_labels"] if t != IGNORE_INDEX]
        assert smol.decode(reply) == d.train["response"][i] + "<|im_end|>"  # the turn's "\n" after it: cut
        assert smol.decode(f["input_ids"]).startswith("<|im_start|>system")
    assert sft_encoding_stats(d.train, smol)["fallback_rows"] == 0
