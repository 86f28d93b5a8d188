"""Health checks: a model that has not learned is flagged, with the numbers that show it."""

import numpy as np
import pytest
from scipy.stats import binomtest

from layerinf.stages.finetune import health_check, wilson


@pytest.mark.parametrize("acc, n", [(0.5, 40), (0.9, 100), (0.0, 10), (1.0, 25), (0.73, 333)])
def test_wilson_interval_matches_scipy(acc, n):
    k = round(acc * n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert np.allclose(wilson(k / n, n), (ci.low, ci.high), atol=1e-9)


def test_a_model_at_chance_is_flagged_and_a_learned_one_is_not():
    labels = np.array([0] * 60 + [1] * 40)
    chance = health_check(0.62, labels, 0.6, labels)  # majority rate 0.60: 0.62 is not clearly better
    assert not chance["learned"] and "not clearly learned" in chance["warning"] and "--epochs" in chance["warning"]
    assert chance["infl"]["majority"] == 0.6 and chance["infl"]["ci95"][0] < 0.6 < chance["infl"]["ci95"][1]
    good = health_check(0.85, labels, 0.8, labels)
    assert good["learned"] and "warning" not in good


@pytest.mark.slow
def test_a_model_that_did_not_learn_is_flagged_in_run_score_and_report(tmp_path, capsys):
    """lr 1e-9: no useful training step. The run's console, `layerinf score`'s output and the report all say
    that the model has not clearly learned; the finetune stage's manifest records it."""
    import json

    from layerinf.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("name: c\ndata: {source: demo, max_train: 60, max_dev: 40}\nmodel: {max_length: 24}\n"
                      "train: {epochs: 1, batch_size: 16, lr: 1.0e-9}\ngrads: {include_we: false}\n"
                      "score: {methods: [tracin], groups: [CL], aggregators: [mean]}\nfilter: {retrain: false}\n")
    run = tmp_path / "run"

    def cli(*args) -> str:
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None)
        return " ".join(capsys.readouterr().out.split())

    out = cli("run", config, "--out", run)
    assert "WARNING" in out and "not clearly learned" in out
    stage = json.loads((run / "finetune" / "stage.json").read_text())
    assert stage["summary"]["health"]["learned"] is False
    out = cli("score", run, "--methods", "tracin", "--groups", "CL", "--aggregators", "mean")
    assert out.count("WARNING") == 2 and "not clearly learned" in out
    cli("report", run, "--bootstrap", "50")
    page = " ".join((run / "report" / "index.html").read_text().split())
    head = page[: page.index("How to read this report")]
    assert "not clearly learned" in head
