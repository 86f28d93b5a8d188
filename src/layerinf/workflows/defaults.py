"""Where a workflow's option defaults differ from the experiment's (a light module: the CLI reads it at start-up).

``suspects`` and ``advise`` rank a user's data whole (no ``max_train`` cap, no noise injected) and fine-tune for a
few epochs, which suffice to rank (the paper's 10 are for its accuracy comparison).
"""

SUSPECTS_DEFAULTS = {"epochs": 3, "max_train": None}
ADVISE_DEFAULTS = {"epochs": 3, "max_train": None}  # as suspects
