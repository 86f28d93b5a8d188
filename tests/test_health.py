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
