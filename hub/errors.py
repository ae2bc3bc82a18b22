"""Domain errors. They become HTTP errors in one middleware (app.py) and
click.ClickException at the CLI edge (cli.py), nowhere else."""

from typing import Any


class HubError(Exception):
    status = 500


class BadRequest(HubError):
    status = 400


class Unauthorized(HubError):
    status = 401


class Forbidden(HubError):
    status = 403


class NotFound(HubError):
    status = 404


class Conflict(HubError):
    status = 409

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class TooLarge(HubError):
    status = 413


class Unavailable(HubError):
    """The store cannot commit (disk full, database locked): the agent keeps its spool."""

    status = 503
