"""Exceptions, one per exit code of the taskmaster command-line tool (cli/output.h)."""


class Error(Exception):
    """Any failure of the module; exit code 5 of the CLI (a refused request, an unknown job...).

    `code` is the protocol's error code when the master sent an ERROR (PROTOCOL.md §7), else None."""

    exit_code = 5

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class TaskFailed(Error):
    """Some task ended dead or cancelled (exit code 1). `outcomes` holds every outcome of the job,
    `failed` those not done."""

    exit_code = 1

    def __init__(self, message, outcomes=(), failed=()):
        super().__init__(message)
        self.outcomes = list(outcomes)
        self.failed = list(failed)


class UsageError(Error, ValueError):
    """Bad arguments given to the module (exit code 2): an invalid endpoint, name or option."""

    exit_code = 2


class Unreachable(Error):
    """No answer from the master within the connect or retry timeout (exit code 3)."""

    exit_code = 3


class AuthFailed(Error):
    """No usable key, or the master refused ours / has another one (exit code 4)."""

    exit_code = 4


class KeyReused(Error):
    """The idempotency key given to submit() is another job's: one submitted with another function,
    queue, args or options (the master's ERROR `key_reused`, PROTOCOL.md §5.4). Exit code 5, as the CLI."""
