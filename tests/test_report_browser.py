"""The report as a user sees it, in headless Chromium: the first screen of a real (small) run states the answer
with its intervals and the comparison with the model's own loss; a run without retraining renders too."""

from __future__ import annotations

import pytest

import layerinf as li
from helpers import chromium_driver

pytestmark = pytest.mark.slow

SMALL = {
    "name": "small",
    "data": {"source": "demo", "max_train": 80, "max_dev": 60, "noise_rate": 0.2, "seed": 0},
    "model": {"name": "minilm", "max_length": 24},
    "train": {"epochs": 1, "batch_size": 16},
    "grads": {"include_we": False},
    "score": {"methods": ["tracin"], "groups": ["CL"], "aggregators": ["mean"]},
    "filter": {"configs": ["tracin/CL/mean", "loss/-/-"], "baselines": ["none", "random"]},
}


def _first_screen(page) -> tuple[str, str, int]:
    """(the answer section's text, the whole page's text, the answer's top in px) as Chromium renders them."""
    driver = chromium_driver()
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        answer = driver.execute_script(
            "const s = document.querySelector('section.answer'); return s ? [s.innerText, "
            "s.getBoundingClientRect().top, window.innerHeight] : ['', 1e9, 0];")
        body = driver.execute_script("return document.body.innerText;")
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length;")
    finally:
        driver.quit()
    assert broken == 0
    text, top, height = answer
    assert top < height, "the answer is below the first screen"
    return " ".join(text.split()), " ".join(body.split()), int(top)


def test_first_screen_holds_the_answer_with_intervals_and_the_loss_comparison(tmp_path):
    run = tmp_path / "run"
    li.run(li.ExperimentConfig.from_dict(SMALL), run, progress=False, echo=None)
    answer, body, _ = _first_screen(li.report(run, bootstrap=200))
    assert "Best configuration by test accuracy after removing the bottom 30 %: tracin/CL/mean" in answer
    assert "NDR@30" in answer and "ROC-AUC" in answer and "95 % bootstrap interval" in answer
    assert answer.count("[") >= 2  # NDR@30 [lo, hi], ROC-AUC [lo, hi]
    assert "ranking by the model's own loss" in answer and "no filtering" in answer and "random removal" in answer
    assert ("beat the model's own loss" in answer) or ("did not beat the model's own loss" in answer)
    assert body.index("What this run found") < body.index("How to read this report")


def test_a_run_without_retraining_renders_its_detection_report(tmp_path):
    run = tmp_path / "run"
    cfg = li.ExperimentConfig.from_dict({**SMALL, "filter": {"retrain": False}})
    li.run(cfg, run, progress=False, echo=None)
    answer, body, _ = _first_screen(li.report(run, bootstrap=100))
    assert "NDR@30" in answer
    assert "No retraining" in body and "Noise detection per configuration" in body
    assert "Win rate" not in body
