"""Request validation against the botocore service model, with the service's message style.

botocore checks required members and minimums on the client; the service also checks maximums,
patterns and enums. This walks the input shape and reports like AWS does:
``1 validation error detected: Value 'x' at 'jobName' failed to satisfy constraint: ...``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from local_aws.errors import AwsError


@functools.cache
def service_model(name: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(name)


def _show(value: Any) -> str:
    return "null" if value is None else f"'{value}'"


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    meta = shape.metadata
    fail = f"Value {_show(value) if shape.type_name not in ('structure', 'list') else ''}"
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be an object")
            return
        for name in shape.required_members:
            if value.get(name) is None:
                errors.append(
                    f"Value null at '{_join(path, name)}' failed to satisfy constraint: "
                    "Member must not be null"
                )
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _check(member, value[name], _join(path, name), errors)
        return
    if shape.type_name == "list":
        if not isinstance(value, list):
            errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a list")
            return
        _length(len(value), meta, f"Value at '{path}'", errors)
        for i, item in enumerate(value, start=1):
            _check(shape.member, item, f"{path}.{i}.member", errors)
        return
    if shape.type_name == "string":
        if not isinstance(value, str):
            errors.append(f"{fail} at '{path}' failed to satisfy constraint: Member must be a string")
            return
        if shape.enum and value not in shape.enum:
            errors.append(
                f"{fail} at '{path}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
            )
        _length(len(value), meta, f"{fail} at '{path}'", errors)
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            errors.append(
                f"{fail} at '{path}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {meta['pattern']}"
            )
        return
    if shape.type_name in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{fail} at '{path}' failed to satisfy constraint: Member must be a number")
            return
        if "min" in meta and value < meta["min"]:
            errors.append(
                f"{fail} at '{path}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {meta['min']}"
            )
        if "max" in meta and value > meta["max"]:
            errors.append(
                f"{fail} at '{path}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {meta['max']}"
            )


def _length(size: int, meta: dict[str, Any], prefix: str, errors: list[str]) -> None:
    if "min" in meta and size < meta["min"]:
        errors.append(
            f"{prefix} failed to satisfy constraint: "
            f"Member must have length greater than or equal to {meta['min']}"
        )
    if "max" in meta and size > meta["max"]:
        errors.append(
            f"{prefix} failed to satisfy constraint: "
            f"Member must have length less than or equal to {meta['max']}"
        )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(service: str, operation: str, params: dict[str, Any]) -> None:
    """Raise ValidationException listing every violation of the operation's input shape."""
    shape = service_model(service).operation_model(operation).input_shape
    errors: list[str] = []
    if shape is not None:
        _check(shape, params, "", errors)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise AwsError(
            "ValidationException", f"{len(errors)} validation {noun} detected: " + "; ".join(errors)
        )
