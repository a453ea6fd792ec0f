"""AWS-style errors the stand-in answers with, rendered per protocol by the server."""

from __future__ import annotations

STATUS = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ConflictException": 409,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "NoSuchResourceException": 400,
    "IllegalArgumentException": 400,
    "UnknownOperationException": 404,
}


class AwsError(Exception):
    """An error response: ``code`` is the exception shape name botocore maps to a class."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS.get(code, 400)


def throttled() -> AwsError:
    return AwsError("ThrottlingException", "Too many requests, please wait before trying again.")


def internal() -> AwsError:
    return AwsError("InternalServerException", "An internal server error occurred. Retry your request.")
