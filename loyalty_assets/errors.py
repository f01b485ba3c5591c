"""The two ways a command ends badly; the CLI prints either as its message alone, no traceback."""


class UserError(Exception):
    """Bad input from the person at the keyboard (exit code 2)."""


class RunFailed(Exception):
    """A Dagster run did not succeed; the message has one line per failed step or check (exit code 1)."""
