"""Domain exceptions. Handlers map them to HTTP statuses in one table (handlers/base.py)."""


class EWMSError(Exception):
    """Base of every error a client can cause; the message is shown to the client."""


class Invalid(EWMSError):
    """The request is malformed or breaks a rule (400)."""


class Unauthenticated(EWMSError):
    """No token, or a bad one (401)."""


class Forbidden(EWMSError):
    """A valid token whose role may not do this (403)."""


class NotFound(EWMSError):
    """No such object, or not the caller's (404: ids leak nothing)."""


class Unprocessable(EWMSError):
    """Well-formed, but the object's state forbids it (422)."""


class TooLarge(EWMSError):
    """The request body is larger than allowed (413)."""


class Unavailable(EWMSError):
    """A service the request needs (the broker) cannot be reached right now (503)."""


class TooManyRequests(EWMSError):
    """A per-user quota is reached (429); `retry_after` seconds is when trying again may help."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
