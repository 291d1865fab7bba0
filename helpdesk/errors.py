"""The errors domain code raises; the web layer maps each to a status and a JSON body."""

from __future__ import annotations


class DeskError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidInput(DeskError):
    status = 422
    code = "invalid"


class BadRequest(DeskError):
    status = 400
    code = "bad_request"


class Unauthorized(DeskError):
    status = 401
    code = "unauthorized"


class Forbidden(DeskError):
    status = 403
    code = "forbidden"


class NotFound(DeskError):
    status = 404
    code = "not_found"


class Conflict(DeskError):
    status = 409
    code = "conflict"


class LengthRequired(DeskError):
    status = 411
    code = "length_required"


class PayloadTooLarge(DeskError):
    status = 413
    code = "too_large"


class TooManyRequests(DeskError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class Unavailable(DeskError):
    status = 503
    code = "unavailable"
