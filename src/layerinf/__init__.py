"""layerinf: layer-wise data influence for LoRA-fine-tuned language models.

Sign convention, everywhere: a HIGHER score means a MORE HELPFUL training example; filtering removes the bottom.
"""

__version__ = "0.1.0"

from layerinf.errors import LayerinfError  # noqa: E402

__all__ = ["LayerinfError", "__version__"]

from layerinf.api import advise, finetune, grads, prepare, report, run, score, suspects, sweep  # noqa: E402
from layerinf.config import ExperimentConfig  # noqa: E402

__all__ += ["prepare", "finetune", "grads", "score", "run", "sweep", "report", "suspects", "advise", "ExperimentConfig"]
