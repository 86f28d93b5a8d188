"""`layerinf advise` on instruction (SFT) data: probes plant response noise (class words replaced, or responses
swapped) in seeded splits of the user's file, every configuration is scored, one is recommended; no noise-rate
estimate. Tiny random Llama (``shape:tiny-llama``), offline."""

import json

import numpy as np
import pytest

from layerinf.errors import LayerinfError
from layerinf.stages.data import load_data
from layerinf.workflows.advise import advise
from helpers import TINY_LLAMA, WORDS, instruction_rows, one_error_line, run_sft_cli, write_jsonl

pytestmark = pytest.mark.slow  # advise fine-tunes once per probe and fold; one test runs the console script

TINY_LLAMA_ADVISE = dict(TINY_LLAMA, grad_batch_size=8, progress=False, echo=None)  # advise's keyword arguments


def class_word_rows(n: int = 60) -> list[dict]:
    """``n`` distinct yes/no instructions (a word and one of several phrasings)."""
    asks = ["Is '{}' longer than five letters?", "Does '{}' have more than five letters?", "Has '{}' over 5 letters?"]
    rows = [{"prompt": ask.format(w) + " Answer yes or no.", "response": "yes" if len(w) > 5 else "no"}
            for ask in asks for w in WORDS][:n]
    assert len({r["prompt"] for r in rows}) == n
    return rows


@pytest.fixture(scope="module")
def advised(tmp_path_factory):
    root = tmp_path_factory.mktemp("advise_sft")
    src = write_jsonl(root / "yesno.jsonl", class_word_rows())
    return advise(root / "out", source=str(src), probes=2, probe_rate=0.5, methods=["tracin", "datainf"],
                  aggregators=["mean", "vote"], **TINY_LLAMA_ADVISE)


def test_sft_probes_plant_response_noise_and_a_configuration_is_recommended(advised):
    res = advised
    assert len(res.probe_dirs) == 2 and res.noise is None
    for pdir in res.probe_dirs:
        train = load_data(pdir).train
        noisy = train["noisy"].to_numpy(bool)
        assert noisy.sum() == int(0.5 * len(train))  # exactly ⌊rate · n⌋ planted
        changed = (train["response"] != train["clean_response"]).to_numpy()
        assert np.array_equal(noisy, changed)  # class words replaced: every planted row's answer differs
    splits = [set(load_data(p).train["source_idx"]) for p in res.probe_dirs]
    assert splits[0] != splits[1]  # each probe's own seeded split
    influence = res.table[res.table["method"].isin(["tracin", "datainf"])]  # (+ the loss / self-influence baselines)
    assert set(influence["method"]) == {"tracin", "datainf"} and set(influence["aggregator"]) == {"mean", "vote"}
    assert res.per_probe["seed"].nunique() == 2
    rec = json.loads((res.folder / "recommendation.json").read_text())
    assert rec["task"] == "sft" and rec["noise_kind"] == "label"
    first = res.table[res.table["kind"] == "influence"].iloc[0]
    assert rec["best"]["key"] == "/".join(first[["method", "group", "aggregator"]])
    assert "instruction data" in rec["kappa_rule"]
    page = res.html.read_text(encoding="utf-8")
    assert "replaced 50% of the training responses" in page and "not estimated for instruction data" in page
    assert "layerinf suspects OUT --source YOUR_DATA --model shape:tiny-llama --method" in page


def test_sft_advise_bad_input_is_one_line_and_writes_nothing(tmp_path):
    src = write_jsonl(tmp_path / "few.jsonl", class_word_rows(12))
    with pytest.raises(LayerinfError, match="plants only"):
        advise(tmp_path / "out", source=str(src), probes=2, probe_rate=0.1, **TINY_LLAMA_ADVISE)
    assert not (tmp_path / "out").exists()
    res = run_sft_cli("advise", tmp_path / "out", "--source", src, "--model", "minilm")
    assert "is an encoder" in one_error_line(res, names_a_fix=False)
    assert not (tmp_path / "out").exists()


def test_free_form_responses_are_swapped(tmp_path):
    src = write_jsonl(tmp_path / "free.jsonl", instruction_rows())
    res = advise(tmp_path / "out", source=str(src), probes=1, probe_rate=0.5, methods=["tracin"],
                 aggregators=["mean"], **TINY_LLAMA_ADVISE)
    train = load_data(res.probe_dirs[0]).train
    noisy = train["noisy"].to_numpy(bool)
    assert noisy.sum() >= 10 and (train["response"] != train["clean_response"]).to_numpy()[noisy].all()
    assert sorted(train["response"][noisy]) == sorted(train["clean_response"][noisy])  # a permutation: swapped
    assert res.recommendation["noise_kind"] == "swap"
