"""The one exception type users see: a message that names the problem and the fix."""


class LayerinfError(Exception):
    """Bad input or a broken artifact. ``str(err)`` is one line: what is wrong, then what to do.

    The CLI prints it as ``error: <message>`` and exits with status 2; nothing half-written is left behind.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} — {fix}")


# ------------------------------------------------------------------------------------------- Ctrl-C, not lost
# Python raises KeyboardInterrupt in the main thread at the next bytecode; when that lands in a destructor or a
# callback whose errors are ignored ("Exception ignored in ..."), the interrupt is lost and the command runs on.
# The CLI's SIGINT handler therefore also sets a flag, and the long loops (training batches, stage commits) call
# ``raise_if_interrupted`` so that a lost interrupt is raised again at the next step.
_interrupt_requested = False


def on_sigint(signum=None, frame=None) -> None:
    """SIGINT handler (installed by the CLI): remember the request, then interrupt as Python does."""
    global _interrupt_requested
    _interrupt_requested = True
    raise KeyboardInterrupt


def quiet_lost_interrupt(unraisable) -> None:
    """``sys.unraisablehook`` (installed with ``on_sigint``): a Ctrl-C that landed in a destructor is not printed
    as "Exception ignored … Traceback" — the flag carries it to the next ``raise_if_interrupted`` — while every
    other unraisable error is reported as Python does."""
    import sys

    if not (_interrupt_requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed, even when the first one was swallowed."""
    if _interrupt_requested:
        raise KeyboardInterrupt
