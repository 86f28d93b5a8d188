"""The report's first screen tells the truth at the point of decision: it says first when no influence configuration
beat no filtering, calls ties ties (within one test example, or within the stated noise), claims a win over the
model's own loss only when the interval allows it, and names one "best" configuration everywhere on the page."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layerinf.reporting as rp
from layerinf.reporting.answer import answer, best_config
from layerinf.reporting.params import ReportParams, RunParams
from layerinf.reporting.uncertainty import average_repeats
from layerinf.store.layout import ANSWER_FILE

N_TRAIN = 60


def _results(accuracies: dict[str, float]) -> pd.DataFrame:
    """eval/results rows of one run: ``{"method/group/aggregator" or baseline: accuracy}``."""
    rows = []
    for name, acc in accuracies.items():
        m, g, a = name.split("/") if "/" in name else (name, "-", "-")
        kind = "baseline" if g == "-" and m != "loss" else "influence"
        rows.append({"model": "tiny-bert", "task": "demo", "seed": 0, "method": m, "group": g, "aggregator": a,
                     "kind": kind, "ndr_30": np.nan if m == "none" else 0.5, "auc_ndr": 0.6, "roc_auc": 0.6,
                     "cancellation": 2.0, "removed": 0 if m == "none" else 18, "best_accuracy": acc,
                     "accuracy_at_best_epoch": acc})
    return pd.DataFrame(rows)


def _answer(accuracies: dict[str, float], n_test: int | None) -> list[str]:
    params = ReportParams((RunParams(fraction=0.3, n_test=n_test),))
    return answer(average_repeats(_results(accuracies)), params, retrained=True)


def test_filtering_that_loses_is_said_first():
    lines = _answer({"datainf/08-15/vote": 0.70, "tracin/CL/mean": 0.65, "none": 0.90, "random": 0.80}, n_test=300)
    assert lines[0].startswith("No influence configuration beat no filtering: the best, datainf/08-15/vote, reached "
                               "0.700 against 0.900 without filtering; random removal 0.800.")
    assert "Filtering made the model worse here" in lines[0]
    assert "rank 1 of" not in " ".join(lines)


def test_the_sft_demo_case_is_a_tie_within_the_noise_not_a_best_configuration():
    """30 test examples: 22 vs 26 right is inside the noise of one measurement; the only influence configuration
    retrained is not 'rank 1 of 1'."""
    lines = _answer({"datainf/08-15/vote": 22 / 30, "loss/-/-": 24 / 30, "none": 26 / 30, "random": 23 / 30},
                    n_test=30)
    assert lines[0].startswith("No influence configuration beat no filtering") and "A tie" in lines[0]
    assert "the noise of one measurement" in lines[0]
    text = " ".join(lines)
    assert "rank 1 of 1" not in text and "the only influence configuration retrained" in text
    assert "on 30 test examples an accuracy's 95 % binomial interval is about ±" in text


def test_ties_within_one_test_example_are_called_ties():
    lines = _answer({"tracin/CL/mean": 127 / 150, "datainf/02-03/vote": 127 / 150 - 1e-4,
                     "tracin/WE/mean": 0.80, "loss/-/-": 124 / 150, "none": 0.70}, n_test=150)
    best = next(ln for ln in lines if ln.startswith("Best configuration"))
    assert "tied with datainf/02-03/vote (within one test example)" in best
    loss = next(ln for ln in lines if "model's own loss on this data" in ln)
    assert loss.startswith("Influence did not beat the model's own loss on this data: a tie"), loss
    assert not lines[0].startswith("No influence configuration")  # 0.847 vs 0.70 on 150 examples: a clear win


def test_beating_the_loss_is_claimed_only_when_the_interval_allows_it():
    clear = _answer({"tracin/CL/mean": 0.90, "loss/-/-": 0.80, "none": 0.75}, n_test=1000)
    assert any(ln.startswith("Influence beat the model's own loss") for ln in clear)
    unknown = _answer({"tracin/CL/mean": 0.90, "loss/-/-": 0.80, "none": 0.75}, n_test=None)
    assert not any(ln.startswith("Influence beat") for ln in unknown)  # no interval, no test-set size: no claim


def test_health_warning_comes_first():
    params = ReportParams((RunParams(fraction=0.3, n_test=300, health_warning="the model has not clearly learned"),))
    lines = answer(average_repeats(_results({"tracin/CL/mean": 0.5, "none": 0.9})), params, retrained=True)
    assert lines[0].startswith("Warning: in 1 of 1 run(s) the model has not clearly learned")
    assert lines[1].startswith("No influence configuration beat no filtering")


def test_best_config_breaks_exact_ties_by_the_table_order():
    frame = average_repeats(_results({"tracin/CL/mean": 0.8, "datainf/02-03/vote": 0.8, "none": 0.7}))
    params = ReportParams((RunParams(n_test=100),))
    table = pd.DataFrame({"method": ["datainf", "tracin"], "group": ["02-03", "CL"], "aggregator": ["vote", "mean"]})
    assert best_config(frame, params, True, table) == (("datainf", "02-03", "vote"), [("tracin", "CL", "mean")])


# ------------------------------------------------------------------------------------------------ whole reports


def make_run(root: Path, accuracies: dict[str, float], n_test: int = 150) -> Path:
    """A run directory with what a report reads: eval results, the data stage's record (test-set size), the
    training split and the score tables (the highest NDR@30 is NOT the best accuracy)."""
    for sub in ("retrain", "data", "scores"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    res = _results(accuracies)
    configs = [k for k in accuracies if "/" in k and not k.startswith("loss")]
    ndr = {c: 0.4 + 0.1 * i for i, c in enumerate(configs)}  # the last configuration detects best
    res["ndr_30"] = [ndr.get(f"{m}/{g}/{a}", r) for m, g, a, r in zip(res["method"], res["group"], res["aggregator"],
                                                                        res["ndr_30"])]
    res.to_parquet(root / "retrain" / "results.parquet", index=False)
    (root / "data" / "stage.json").write_text(json.dumps({"stage": "data", "files": {}, "seed": 0,
                                                           "summary": {"train": N_TRAIN, "test": n_test}}))
    (root / "data" / "meta.json").write_text(json.dumps({"label_names": ["negative", "positive"]}))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, N_TRAIN)
    noisy = np.arange(N_TRAIN) < 12
    pd.DataFrame({"idx": np.arange(N_TRAIN), "source_idx": np.arange(N_TRAIN), "text": [f"row {i}" for i in
                                                                                          range(N_TRAIN)],
                  "label": np.where(noisy, 1 - labels, labels), "clean_label": labels, "noisy": noisy}
                 ).to_parquet(root / "data" / "train.parquet", index=False)
    pd.DataFrame({"method": [c.split("/")[0] for c in configs], "group": [c.split("/")[1] for c in configs],
                  "aggregator": [c.split("/")[2] for c in configs], "ndr_30": [ndr[c] for c in configs]}
                 ).to_parquet(root / "scores" / "table.parquet", index=False)
    agg = {"idx": np.arange(N_TRAIN)}
    agg.update({c: rng.normal(size=N_TRAIN) for c in configs})
    pd.DataFrame(agg).to_parquet(root / "scores" / "aggregated.parquet", index=False)
    return root


def _first_screen(page: Path) -> list[str]:
    html = page.read_text()
    section = html[html.index('<section class="answer">'): html.index("</section>")]
    return [p.split("</p>")[0] for p in section.split("<p>")[1:]]


@pytest.mark.slow  # writes a whole report with its figures
def test_a_report_where_filtering_loses_says_so_first(tmp_path):
    run = make_run(tmp_path / "run", {"datainf/02-03/vote": 0.70, "tracin/CL/mean": 0.72, "none": 0.88,
                                      "random": 0.80, "oracle": 0.93})
    page = rp.report(run, bootstrap=0)
    first = _first_screen(page)[0]
    assert first.startswith("No influence configuration beat no filtering: the best, tracin/CL/mean, reached "
                            "0.720 against 0.880 without filtering"), first
    answer_txt = (page.parent / ANSWER_FILE).read_text().splitlines()
    assert answer_txt[0].startswith("No influence configuration beat no filtering")
    # the table of suspects uses the same best configuration (not datainf/02-03/vote, the best NDR@30 here)
    html = page.read_text()
    assert "The lowest-scored training examples of tracin/CL/mean, the best configuration named at the top" in html


@pytest.mark.slow  # writes a whole report with its figures
def test_a_report_with_a_tie_calls_it_one(tmp_path):
    run = make_run(tmp_path / "run", {"tracin/CL/mean": 127 / 150, "datainf/02-03/vote": 127 / 150,
                                      "cosine/WE/rank": 0.75, "loss/-/-": 124 / 150, "none": 0.70}, n_test=150)
    lines = _first_screen(rp.report(run, bootstrap=0))
    best = next(ln for ln in lines if ln.startswith("Best configuration"))
    assert "tied with" in best and "(within one test example)" in best, best
    assert any(ln.startswith("Influence did not beat the model&#x27;s own loss on this data: a tie") for ln in lines)


@pytest.mark.slow  # fine-tunes a tiny random model
def test_suspects_console_prints_health_warnings_before_the_table(tmp_path, capsys):
    """lr 1e-9: the model learns nothing; the warning comes before the table, where it cannot be missed."""
    from layerinf.cli import main

    try:
        main(["suspects", str(tmp_path / "out"), "--source", "demo", "--max-train", "40", "--max-dev", "20",
              "--model", "shape:tiny-bert", "--max-length", "16", "--epochs", "1", "--lr", "1e-9"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "WARNING" in out and out.index("WARNING") < out.index("most suspicious training examples")
