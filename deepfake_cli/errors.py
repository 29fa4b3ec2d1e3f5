class DeepfakeError(Exception):
    """A problem with the user's input. The message says what to do next.

    Only the CLI catches it: it prints the message as one red line and exits non-zero.
    Anything else is a bug and keeps its traceback.
    """
