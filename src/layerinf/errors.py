"""The one exception type users see: a message that names the problem and the fix."""


class LayerinfError(Exception):
    """Bad input or a broken artifact. ``str(err)`` is one line: what is wrong, then what to do.

    The CLI prints it as ``error: <message>`` and exits with status 2; nothing half-written is left behind.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} — {fix}")
