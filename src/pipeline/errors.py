"""Errors a user can cause. The entry point turns each into one line on stderr and exit status 2."""


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint): the message says what to type instead."""
