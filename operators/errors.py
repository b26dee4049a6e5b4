"""The one exception family of Sluice. Messages say what went wrong, where, and what to do."""


class SluiceError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback and exits 1."""

    exit_code = 1


class ConfigError(SluiceError):
    """Bad usage or a bad config (exit 2)."""

    exit_code = 2


class InputError(SluiceError):
    """An input file that cannot be read as configured."""


class AccountingError(SluiceError):
    """A stage whose row counts do not balance: a bug, never a user mistake."""


class ReleaseError(SluiceError):
    """A release that cannot be written, or that fails verification."""
