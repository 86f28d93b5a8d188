"""Where a workflow's option defaults differ from the experiment's (a light module: the CLI reads it at start-up).

``suspects`` and ``advise`` rank a user's data whole (no ``max_train`` cap, no noise injected) and fine-tune by a
budget of optimiser steps (``min_steps``: at least 3 epochs, and at least 300 steps, so that a file of a few hundred
rows is trained on long enough for the model to learn; the paper's 10 epochs are for its accuracy comparison).
"""

SMALL_DATA_RECIPE = {"epochs": 3, "min_steps": 300}
SUSPECTS_DEFAULTS = {**SMALL_DATA_RECIPE, "max_train": None}
ADVISE_DEFAULTS = {**SMALL_DATA_RECIPE, "max_train": None}  # as suspects


def step_budget(train, options: dict, sft: bool):
    """The step budget (``min_steps``) is the classification recipe's: instruction data train ``--epochs`` unless
    ``min_steps`` was given."""
    import dataclasses

    return dataclasses.replace(train, min_steps=None) if sft and "min_steps" not in options else train
