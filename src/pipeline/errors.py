"""Errors a user can cause. The entry point turns each into one line on stderr and exit status 2."""


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint): the message says what to type instead."""


def one_line(err: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (or just ``Type``), for one-line reports."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:limit]}" if text else type(err).__name__
