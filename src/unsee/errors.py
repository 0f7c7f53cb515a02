"""The one exception type for bad user input.

Library code raises `UnseeError` when what it was given cannot work (a missing
model folder, an empty prompt file). The CLI prints its message on one line and
exits with code 2; any other exception is a bug and keeps its traceback.
"""


class UnseeError(ValueError):
    """User input that cannot work; the message says what is wrong and how to fix it."""


class StaleImageSet(UnseeError):
    """An output folder holds an image set made with other settings or other weights."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries put tracebacks and advice below it), or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
