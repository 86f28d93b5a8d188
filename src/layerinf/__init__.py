"""layerinf: layer-wise data influence for LoRA-fine-tuned language models.

Sign convention, everywhere: a HIGHER score means a MORE HELPFUL training example; filtering removes the bottom.
"""

from layerinf.errors import LayerinfError
from layerinf.version import __version__

__all__ = ["LayerinfError", "__version__"]

from layerinf.api import (  # noqa: E402
    advise, finetune, grads, health_warning, prepare, report, retrain, run, score, score_sets, suspects, sweep)
from layerinf.config import ExperimentConfig  # noqa: E402

__all__ += ["prepare", "finetune", "grads", "score", "score_sets", "retrain", "run", "sweep", "report", "suspects", "advise",
            "health_warning", "ExperimentConfig"]
