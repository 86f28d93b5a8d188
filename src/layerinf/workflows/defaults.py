"""Where a workflow's option defaults differ from the experiment's (a light module: the CLI reads it at start-up).

``suspects`` and ``advise`` rank a user's data whole (no ``max_train`` cap, no noise injected) and fine-tune with
the small-data recipe:

* a budget of optimiser steps (``min_steps``): at least 3 epochs and at least 150 steps, so that a file of a few
  hundred rows is trained on long enough for the model to learn (the paper's 10 epochs are for its accuracy
  comparison on thousands of rows);
* a learning rate of at most 1e-3 (``SMALL_DATA_MAX_LR``) unless ``lr`` is given: MiniLM's tuned 5e-3 (the demo's
  and ``run``'s) memorises a 333-row fold with 20 % flipped labels within ~100 steps (train loss 0.002, held-out
  accuracy 0.58), while 1e-3 learns it (held-out accuracy 0.71 against 0.56 for the majority class; docs/detection.md).

``run`` (the paper's protocol) keeps the paper's settings unless asked.
"""

SMALL_DATA_MAX_LR = 1e-3
SMALL_DATA_RECIPE = {"epochs": 3, "min_steps": 150}
SUSPECTS_DEFAULTS = {**SMALL_DATA_RECIPE, "max_train": None}
ADVISE_DEFAULTS = {**SMALL_DATA_RECIPE, "max_train": None}  # as suspects


def small_data_recipe(train, model_name: str, options: dict, sft: bool):
    """``train`` with the small-data learning rate (``min(default_lr(model), SMALL_DATA_MAX_LR)`` unless ``lr`` was
    given) and, for instruction data, no step budget unless ``min_steps`` was given (they train ``--epochs``)."""
    import dataclasses

    from layerinf.model.sources import default_lr

    if train.lr is None and options.get("lr") is None:
        train = dataclasses.replace(train, lr=min(default_lr(model_name), SMALL_DATA_MAX_LR))
    return dataclasses.replace(train, min_steps=None) if sft and "min_steps" not in options else train
