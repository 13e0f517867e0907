"""Errors the module's logic raises besides ValueError (bad inputs or options)."""


class DependencyError(RuntimeError):
    """A package the module needs is missing and was not installed."""


class Cancelled(RuntimeError):
    """The run was cancelled (by the user, a scene close or a removed input)."""


class WorkerFailed(RuntimeError):
    """The worker process reported an error, crashed or was killed."""
