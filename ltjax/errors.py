"""Errors that are the user's to fix (a missing file, a missing package): the CLIs print their message
and exit with status 2 instead of a traceback (see :func:`ltjax.config.exit_on_config_error`)."""


class UserError(Exception):
    """Mixin for exceptions whose message already says what is wrong and how to fix it."""
