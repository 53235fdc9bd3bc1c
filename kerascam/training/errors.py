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
