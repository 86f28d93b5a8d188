"""Noise kinds for classification (``data.noise_kind``): uniform (unchanged), class_conditional, ambiguous —
exact counts, the ground-truth mask, seed determinism, and one clear error line for bad values."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

import layerinf as li
from helpers import one_error_line, run_main
from layerinf.config import DataConfig, ExperimentConfig
from layerinf.data.noise import (ambiguous_noise, class_conditional_noise, inject_noise, noise_count,
                                 out_of_sample_probs, transition_matrix)
from layerinf.data.prepared import prepare
from layerinf.errors import LayerinfError

NAMES = ["negative", "positive"]


def _labels(n0=200, n1=100, seed=1):
    y = np.array([0] * n0 + [1] * n1)
    return np.random.default_rng(seed).permutation(y)


def test_uniform_is_unchanged_and_the_default():
    y = _labels()
    via_prepare = prepare("demo", max_train=120, max_dev=40, noise_rate=0.2, seed=3)
    explicit = prepare("demo", max_train=120, max_dev=40, noise_rate=0.2, seed=3, noise_kind="uniform")
    pd.testing.assert_frame_equal(via_prepare.train, explicit.train)
    assert "noise_kind" not in via_prepare.meta  # uniform runs keep their meta (and cache keys) as before
    noisy, mask = inject_noise(y, 0.2, seed=0)
    assert mask.sum() == noise_count(len(y), 0.2)
    assert DataConfig().noise_kind == "auto" and DataConfig().noise_rates is None


@pytest.mark.parametrize("spec", [{0: 0.35, 1: 0.05}, ["0:0.35", "1:0.05"], [0.35, 0.05],
                                  {"negative": 0.35, "positive": 0.05}])
def test_class_conditional_exact_counts_per_class(spec):
    y = _labels()
    noisy, mask = class_conditional_noise(y, spec, NAMES, seed=4)
    assert mask[y == 0].sum() == noise_count(200, 0.35) == 70
    assert mask[y == 1].sum() == noise_count(100, 0.05) == 5
    assert np.array_equal(noisy != y, mask)  # the mask marks exactly the changed labels
    again, mask2 = class_conditional_noise(y, spec, NAMES, seed=4)
    assert np.array_equal(again, noisy) and np.array_equal(mask, mask2)
    other, _ = class_conditional_noise(y, spec, NAMES, seed=5)
    assert not np.array_equal(other, noisy)


def test_class_conditional_transition_matrix_multiclass():
    y = np.repeat([0, 1, 2], 100)
    noisy, mask = class_conditional_noise(y, {"0>1": 0.2, "0>2": 0.1, "2>0": 0.05}, ["a", "b", "c"], seed=0)
    assert ((y == 0) & (noisy == 1)).sum() == 20 and ((y == 0) & (noisy == 2)).sum() == 10
    assert ((y == 2) & (noisy == 0)).sum() == 5 and mask[y == 1].sum() == 0 and mask.sum() == 35
    rates, T = transition_matrix(["0:0.3"], ["a", "b", "c"])
    noisy, mask = class_conditional_noise(y, ["0:0.3"], ["a", "b", "c"], seed=0)
    assert mask.sum() == 30 and set(noisy[mask]) <= {1, 2} and rates[0] == 0.3 and T.sum() == 0


def test_ambiguous_flips_the_least_certain_rows():
    texts = [f"good great fine {i}" for i in range(40)] + [f"bad awful poor {i}" for i in range(40)]
    texts[3] = texts[45] = "good bad mixed"  # the hard rows
    y = np.array([1] * 40 + [0] * 40)
    noisy, mask, p_clean = ambiguous_noise(y, texts, 0.1, 2, seed=0)
    assert mask.sum() == noise_count(80, 0.1) == 8
    assert np.array_equal(noisy[mask], 1 - y[mask]) and np.array_equal(noisy != y, mask)
    assert mask[3] and mask[45]  # the ambiguous ones are among the flipped
    assert p_clean[mask].max() <= p_clean[~mask].min()
    again = ambiguous_noise(y, texts, 0.1, 2, seed=0)
    assert np.array_equal(again[0], noisy)
    probs = out_of_sample_probs(texts, y, 2, seed=0)
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_prepare_with_each_kind_keeps_the_mask():
    cc = prepare("demo", max_train=120, max_dev=40, seed=0, noise_kind="class_conditional",
                 noise_rates={0: 0.3, 1: 0.1})
    tr = cc.train
    assert (tr["label"] != tr["clean_label"]).eq(tr["noisy"]).all()
    counts = tr.groupby("clean_label")["noisy"].sum().to_dict()
    sizes = tr.groupby("clean_label").size().to_dict()
    assert counts == {0: noise_count(sizes[0], 0.3), 1: noise_count(sizes[1], 0.1)}
    assert cc.meta["noise_kind"] == "class_conditional"
    amb = prepare("demo", max_train=120, max_dev=40, seed=0, noise_rate=0.2, noise_kind="ambiguous")
    assert amb.train["noisy"].sum() == noise_count(120, 0.2)
    assert (amb.train["label"] != amb.train["clean_label"]).eq(amb.train["noisy"]).all()
    amb2 = prepare("demo", max_train=120, max_dev=40, seed=0, noise_rate=0.2, noise_kind="ambiguous")
    pd.testing.assert_frame_equal(amb.train, amb2.train)


def test_yaml_api_and_cli_share_the_names(tmp_path, capsys):
    cfg = ExperimentConfig.from_dict({"data": {"source": "demo", "noise_kind": "class_conditional",
                                               "noise_rates": {0: 0.35, 1: 0.05}}})
    assert cfg.data.noise_rates == ["0:0.35", "1:0.05"]  # the YAML mapping as the CLI's CLASS:RATE texts
    run = tmp_path / "r"
    li.prepare(run, source="demo", max_train=60, max_dev=20, noise_kind="class_conditional",
               noise_rates=["0:0.2", "1:0.1"])
    code, out, err = run_main(["prepare", tmp_path / "c", "--source", "demo", "--max-train", "60", "--max-dev",
                               "20", "--noise-kind", "class_conditional", "--noise-rates", "0:0.2,1:0.1"], capsys)
    assert code == 0, err
    a = pd.read_parquet(run / "data" / "train.parquet")
    b = pd.read_parquet(tmp_path / "c" / "data" / "train.parquet")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("args, match", [
    (["--noise-kind", "gaussian"], r"noise_kind: unknown value 'gaussian'"),
    (["--noise-kind", "class_conditional", "--noise-rates", "0:1.2"], r"rate 1\.2 is outside \[0, 1\)"),
    (["--noise-kind", "class_conditional", "--noise-rates", "0:-0.1"], r"outside \[0, 1\)"),
    (["--noise-kind", "class_conditional", "--noise-rates", "7:0.1"], r"class '7' does not exist"),
    (["--noise-kind", "class_conditional"], r"class_conditional needs noise_rates"),
    (["--noise-rates", "0:0.1"], r"noise_rates is given but noise_kind is uniform"),
    (["--noise-kind", "swap"], r"noise_kind 'swap' is not a classification noise kind"),
])
def test_bad_noise_values_give_one_error_line(tmp_path, capsys, args, match):
    code, out, err = run_main(["prepare", tmp_path / "r", "--source", "demo", "--max-train", "40", "--max-dev",
                               "20", *args], capsys)
    res = subprocess.CompletedProcess([], code, out, err)
    line = one_error_line(res)
    assert __import__("re").search(match, line), line
    assert not (tmp_path / "r" / "data" / "train.parquet").exists()


def test_api_errors_are_layerinf_errors():
    with pytest.raises(LayerinfError, match="flips a class to itself"):
        transition_matrix({"0>0": 0.1}, NAMES)
    with pytest.raises(LayerinfError, match="would lose"):
        transition_matrix({"0>1": 0.6, "0>2": 0.5}, ["a", "b", "c"])
    with pytest.raises(LayerinfError, match="not a classification noise kind"):
        prepare("demo", max_train=40, max_dev=20, noise_kind="label")
    with pytest.raises(LayerinfError, match="data.noise_kind: unknown value"):
        DataConfig(source="demo", noise_kind="gaussian")
