"""The errors of a training run, each printed by train.py as one line."""


class TrainingError(RuntimeError):
    """A problem the user can act on; train.py prints it as one line."""


class TrainingInterrupted(TrainingError):
    """SIGTERM or SIGINT stopped the run after saving a checkpoint.

    Attributes:
        exit_code: 128 + the signal's number (SIGTERM 143, SIGINT 130), the
            code ``train.py`` exits with, as a shell reports a process ended
            by that signal.
    """

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):  # crosses process boundaries (train.py --jobs 2)
        return type(self), (str(self), self.exit_code)


def first_line(error, message=None):
    """The first line of ``message`` (default: the error's own), or the error's type name when empty.

    What train.py prints of an error, and of a model that failed under ``--jobs``.
    """
    text = str(error if message is None else message).strip()
    return text.splitlines()[0] if text else type(error).__name__


def unrestorable_checkpoint(path, error):
    """The `TrainingError` for a checkpoint that exists but cannot be read back (either backend's)."""
    return TrainingError(
        f"cannot restore checkpoint {path} ({first_line(error)}); it is damaged or from another run: "
        "remove it to resume from the previous one, or use another --workdir"
    )
