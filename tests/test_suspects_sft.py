"""`layerinf suspects` on instruction (SFT) data: a ranked CSV / JSONL and a page with prompt, response, response
loss and score; cross-fitting ranks every row; bad SFT input is one line before anything is written.

The tests use ``shape:tiny-llama`` (random weights, the offline MiniLM tokenizer, no chat template); those that
fine-tune or run the console script are marked slow, like the Done-when test, which plants swapped responses in a
sentiment instruction file and runs SmolLM2-135M-Instruct.
"""

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_LLAMA, cli_args, instruction_rows, one_error_line, run_sft_cli, write_jsonl
from layerinf.stages.rank import SFT_COLUMNS, load_result, summary_table
from layerinf.stages.rank_page import TEXT_LIMIT, _cut

TINY_LLAMA_ARGS = cli_args(TINY_LLAMA)  # the tiny random decoder's recipe as console-script options


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype={"prompt": str, "response": str})


# ------------------------------------------------------------------------------------------------ tiny-llama


@pytest.fixture(scope="module")
def crossfit_run(tmp_path_factory):
    """``layerinf suspects`` through the console script on a 30-row prompt/response JSONL (3-fold cross-fitting)."""
    root = tmp_path_factory.mktemp("sft_suspects")
    src = write_jsonl(root / "instructions.jsonl", instruction_rows())
    res = run_sft_cli("suspects", root / "out", "--source", src, *TINY_LLAMA_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "out", res


@pytest.mark.slow
def test_sft_suspects_csv_page_and_console(crossfit_run):
    out, res = crossfit_run
    rows = instruction_rows()
    csv = read_csv(out / "suspects" / "suspects.csv")
    side = ["response_loss_oos", "score:influence", "score:loss_oos", "score:combined"]  # cross-fitting's extras
    assert list(csv.columns) == SFT_COLUMNS + side
    assert np.array_equal(csv["score"], csv["score:influence"]) and (csv["response_loss_oos"] > 0).all()
    assert np.allclose(csv["score:loss_oos"], -csv["response_loss_oos"])
    assert len(csv) == len(rows) and sorted(csv["source_idx"]) == list(range(len(rows)))  # every row ranked
    assert list(csv["rank"]) == list(range(1, len(rows) + 1))
    for r in csv.itertuples(index=False):  # the texts are the file's, row by row
        assert r.prompt == rows[r.source_idx]["prompt"] and r.response == rows[r.source_idx]["response"]
    assert np.isfinite(csv["response_loss"]).all() and (csv["response_loss"] > 0).all()
    assert csv["score"].is_monotonic_increasing
    assert int(csv["suspect"].sum()) == 9  # 30 % of 30
    page = (out / "suspects" / "index.html").read_text(encoding="utf-8")
    top = csv.iloc[0]["prompt"]
    assert html.escape(top) in page and top not in page  # escaped (the prompts hold < > &)
    assert "<th>prompt</th>" in page and "response loss" in page and "Cross-fitting" in page
    assert "30 of 30 rows ranked, cross-fitted over 3 folds" in res.stdout
    assert "ranked rows flagged by" in res.stdout
    result = load_result(out / "suspects")
    assert result.task == "sft" and result.kind.name == "sft" and result.n == 30 and result.label_names == []
    assert result.coverage["how"] == "crossfit" and result.coverage["ranked"] == 30
    assert json.loads((out / "suspects" / "summary.json").read_text())["task"] == "sft"
    table = summary_table(result, k=5)
    assert list(table.columns) == ["rank", "row", "loss", "score", "prompt", "response"]
    for fold in range(3):  # each fit's own ranking is an SFT table too
        fit = read_csv(out / "folds" / f"fold-{fold}" / "suspects" / "suspects.csv")
        assert list(fit.columns) == SFT_COLUMNS and len(fit) == 20


@pytest.mark.slow
def test_sft_suspects_one_fit_says_what_was_not_ranked(tmp_path):
    from layerinf.workflows.suspects import find_suspects

    src = write_jsonl(tmp_path / "instructions.jsonl", instruction_rows())
    res = find_suspects(tmp_path / "out", source=str(src), folds=1, model="shape:tiny-llama", max_length=32,
                        max_response_length=8, epochs=1, batch_size=8, progress=False)
    assert res.task == "sft" and res.n == 24 and list(res.table.columns) == SFT_COLUMNS
    assert res.coverage["how"] == "carved"
    assert "24 of 30 rows ranked by one fit; 6 rows were NOT ranked" in res.coverage_text
    assert res.coverage_text in (res.folder / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_sft_suspects_with_a_layerinf_adapter(crossfit_run, tmp_path):
    """An SFT run's own adapter (a fold's best.safetensors) is imported: no fine-tuning, one fit, all 30 rows."""
    out, _ = crossfit_run
    adapter = out / "folds" / "fold-0" / "finetune" / "best.safetensors"
    src = write_jsonl(tmp_path / "instructions.jsonl", instruction_rows())
    res = run_sft_cli("suspects", tmp_path / "a", "--source", src, "--adapter", adapter, *TINY_LLAMA_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    table = read_csv(tmp_path / "a" / "suspects" / "suspects.csv")
    assert list(table.columns) == SFT_COLUMNS and len(table) == 24  # one fit: the carved-out 20 % not ranked
    summary = json.loads((tmp_path / "a" / "finetune" / "stage.json").read_text())["summary"]
    assert summary["imported"] and summary["loss_reduction"] == "mean"
    assert not (tmp_path / "a" / "finetune" / "init.safetensors").exists()


def _tiny_peft_adapter(folder: Path, **lora) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from layerinf.model.causal import load_causal_base

    peft_model = get_peft_model(load_causal_base("shape:tiny-llama"), LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **lora))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(folder)
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}


def test_peft_causal_adapter_is_imported_with_its_own_tensors(tmp_path):
    import torch

    from layerinf.errors import LayerinfError
    from layerinf.model.causal import import_causal_adapter

    want = _tiny_peft_adapter(tmp_path / "peft")
    loaded = import_causal_adapter("shape:tiny-llama", tmp_path / "peft")
    got = {n: p for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)
    assert (loaded.config.lora_r, loaded.config.lora_alpha) == (4, 8)
    assert loaded.config.lora_targets == ["q_proj", "v_proj"]
    _tiny_peft_adapter(tmp_path / "head", modules_to_save=["lm_head"])
    with pytest.raises(LayerinfError, match="modules_to_save"):
        import_causal_adapter("shape:tiny-llama", tmp_path / "head")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))  # tensors have rank 4
    with pytest.raises(LayerinfError, match="does not fit"):
        import_causal_adapter("shape:tiny-llama", tmp_path / "peft")


def test_peft_causal_adapter_gives_the_logits_peft_gives(tmp_path):
    import torch
    from peft import PeftModel

    from layerinf.model.causal import import_causal_adapter, load_causal_base

    _tiny_peft_adapter(tmp_path / "peft")
    ids = torch.tensor([[5, 17, 3, 42, 8, 11]])
    want = PeftModel.from_pretrained(load_causal_base("shape:tiny-llama"), tmp_path / "peft").eval()(input_ids=ids).logits
    got = import_causal_adapter("shape:tiny-llama", tmp_path / "peft").model.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("option, value", [("use_rslora", True), ("alpha_pattern", {"q_proj": 32}),
                                           ("use_dora", True), ("layers_to_transform", [0]), ("bias", "lora_only")])
def test_peft_options_layerinf_does_not_reproduce_are_refused(tmp_path, option, value):
    from layerinf.errors import LayerinfError
    from layerinf.model.causal import import_causal_adapter

    _tiny_peft_adapter(tmp_path / "peft", **{option: value})
    with pytest.raises(LayerinfError, match=f"uses {option}"):
        import_causal_adapter("shape:tiny-llama", tmp_path / "peft")


@pytest.mark.slow
def test_sft_suspects_with_a_peft_adapter_through_the_cli(tmp_path):
    _tiny_peft_adapter(tmp_path / "peft")
    src = write_jsonl(tmp_path / "instructions.jsonl", instruction_rows())
    res = run_sft_cli("suspects", tmp_path / "p", "--source", src, "--adapter", tmp_path / "peft", *TINY_LLAMA_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(read_csv(tmp_path / "p" / "suspects" / "suspects.csv")) == 24
    _tiny_peft_adapter(tmp_path / "head", modules_to_save=["lm_head"])
    res = run_sft_cli("suspects", tmp_path / "h", "--source", src, "--adapter", tmp_path / "head", *TINY_LLAMA_ARGS)
    assert "modules_to_save" in one_error_line(res, names_a_fix=False)
    assert not (tmp_path / "h").exists()


def test_page_cuts_long_texts_visibly():
    text = "<" + "x" * (TEXT_LIMIT + 50)
    cut = _cut(text)
    assert cut.startswith("&lt;x") and "…" in cut and "+51 characters" in cut
    assert _cut("a < b") == "a &lt; b"


@pytest.mark.slow
def test_old_summary_loads_as_classification(crossfit_run, tmp_path):
    out, _ = crossfit_run
    folder = tmp_path / "suspects"
    shutil.copytree(out / "suspects", folder)
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("task")
    (folder / "summary.json").write_text(json.dumps(summary))
    assert load_result(folder).task == "classification"


# ------------------------------------------------------------------------------------------------ bad input


def _bad_files(folder: Path) -> dict[str, tuple[list, str]]:
    good = instruction_rows()[:12]
    files = {
        "no_response": (write_jsonl(folder / "labels.jsonl", [{"text": r["prompt"], "label": i % 2}
                                                                 for i, r in enumerate(good)]),
                        ["--task-type", "sft"], "no response column"),
        "empty_response": (write_jsonl(folder / "empty.jsonl", [*good[:5], {"prompt": "Say hi.", "response": "  "},
                                                                *good[5:]]), [], "empty response"),
        "chat_template_on": (write_jsonl(folder / "ok.jsonl", good), ["--chat-template", "on"], "no chat template"),
        "response_to_nothing": (write_jsonl(folder / "zw.jsonl", [*good[:3], {"prompt": "Say it.",
                                                                              "response": "\u200b"}, *good[3:]]),
                                [], "empty after tokenisation"),
    }
    return {k: ([v[0], *v[1]], v[2]) for k, v in files.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_response", "empty_response", "chat_template_on", "response_to_nothing"])
def test_bad_sft_input_is_one_line_and_writes_nothing(tmp_path, case):
    (src, *extra), match = _bad_files(tmp_path)[case]
    out = tmp_path / "out"
    res = run_sft_cli("suspects", out, "--source", src, *extra, *TINY_LLAMA_ARGS, timeout=300)
    line = one_error_line(res, names_a_fix=False)
    assert match in line and " — " in line, line
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["minilm", "shape:tiny-bert"])
def test_an_encoder_on_sft_data_is_one_line_and_writes_nothing(tmp_path, model):
    src = write_jsonl(tmp_path / "ok.jsonl", instruction_rows()[:12])
    (tmp_path / "sft.yaml").write_text(f"name: enc\ndata: {{source: {src}, task_type: sft}}\nmodel: {{name: '{model}'}}\n")
    for args in (["suspects", tmp_path / "out", "--source", src, "--model", model],
                 ["run", tmp_path / "sft.yaml", "--out", tmp_path / "out"]):
        line = one_error_line(run_sft_cli(*args, timeout=300), names_a_fix=False)
        assert "is an encoder" in line and "decoder" in line, line
        assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ SmolLM2


def planted_sentiment_file(path: Path, n: int = 120, rate: float = 0.2, seed: int = 0):
    """``n`` short demo reviews as instructions ("Is the sentiment … positive or negative?"), half per class;
    ``rate`` of them get the response of a row of the other class (swapped in pairs: a planted response is the
    wrong answer). Returns the file and the planted mask (by row number)."""
    from layerinf.data.sft import demo_sft_rows

    rng = np.random.default_rng(seed)
    rows = [r for r in demo_sft_rows() if r["split"] == "train" and len(r["prompt"].split()) <= 32]
    by = {c: [r for r in rows if r["response"] == c] for c in ("negative", "positive")}
    picked = [by[c][int(i)] for c in by for i in rng.choice(len(by[c]), n // 2, replace=False)]
    picked = [picked[int(i)] for i in rng.permutation(len(picked))]
    data = [{"prompt": r["prompt"], "response": r["response"]} for r in picked]
    k = int(rate * n) // 2
    neg = rng.choice([i for i, r in enumerate(data) if r["response"] == "negative"], k, replace=False)
    pos = rng.choice([i for i, r in enumerate(data) if r["response"] == "positive"], k, replace=False)
    mask = np.zeros(n, dtype=bool)
    for a, b in zip(neg, pos):  # swap the two rows' responses
        data[a]["response"], data[b]["response"] = data[b]["response"], data[a]["response"]
        mask[[a, b]] = True
    return write_jsonl(path, data), mask


@pytest.mark.slow
def test_done_when_planted_swaps_are_enriched_among_sft_suspects(tmp_path, smollm2):
    """Done when: 20 % planted swapped responses; the share of planted rows among the suspects (bottom 30 %) is at
    least twice the planted share among the ranked rows. Default method / group / aggregator; ``--folds 1`` (one
    fit, 20 % carved out as validation data and not ranked) keeps it to one fine-tuning on 2 CPU cores."""
    src, mask = planted_sentiment_file(tmp_path / "planted.jsonl")
    res = run_sft_cli("suspects", tmp_path / "out", "--source", src, "--model", smollm2, "--max-length", "80",
                      "--max-response-length", "8", "--epochs", "3", "--batch-size", "8", "--folds", "1", timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    csv = read_csv(tmp_path / "out" / "suspects" / "suspects.csv")
    planted = mask[csv["source_idx"].to_numpy()]
    share = float(planted.mean())
    flagged = csv["suspect"].to_numpy(bool)
    in_suspects = float(planted[flagged].mean())
    by_loss = np.argsort(-csv["response_loss"].to_numpy(), kind="stable")[: int(flagged.sum())]  # baseline
    loss_share = float(planted[by_loss].mean())
    print(f"planted share {share:.3f}; among influence suspects {in_suspects:.3f} "
          f"({in_suspects / share:.2f}x); among the highest response losses {loss_share:.3f}")
    assert in_suspects >= 2 * share, (in_suspects, share, loss_share)
