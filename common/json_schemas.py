"""An expert's JSON schema is data: checked, never followed.

Every schema an expert supplies (today: a question's form, `question.asked`) goes through here:
- `schema_problem` says why a schema cannot be used, before anyone is shown it: not a valid
  Draft 2020-12 schema (`check_schema`, which also compiles every `pattern`), or it refers to
  anything (`$ref`, `$dynamicRef`, `$recursiveRef`). A question's schema is flat (MCP elicitation:
  top-level properties of primitive types), so a reference is never needed; refusing them also
  rules out a schema that refers to itself (`{"$ref": "#"}` recurses for ever).
- `content_errors` validates content against a schema with an empty referencing registry whose
  `retrieve` refuses: jsonschema's default would fetch any `http`, `https`, `ftp` or `file` URI
  with urllib (no timeout, no host policy). It is the one place content meets a schema, so a step
  before validation (defaults, issue 26) goes right before its `iter_errors`.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

VALIDATOR = Draft202012Validator
REFERENCE_KEYWORDS = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})
# Keywords whose values are instances, not schemas: a `{"$ref": ...}` there is data.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


class UnusableSchema(ValueError):
    """The schema cannot be checked against (the reason is the message)."""


def _retrieve_nothing(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class: mypy misreads it


NOTHING: Registry[Any] = Registry(retrieve=_retrieve_nothing)  # type: ignore[call-arg]  # attrs, as above


def _reference(node: Any) -> str | None:
    """The first reference anywhere in the schema, or None."""
    if isinstance(node, list):
        return next((found for item in node if (found := _reference(item)) is not None), None)
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if key in REFERENCE_KEYWORDS and isinstance(value, str):
            return value
        if key in DATA_KEYWORDS:
            continue
        if (found := _reference(value)) is not None:
            return found
    return None


def schema_problem(schema: Any) -> str | None:
    """Why an expert's schema cannot be used (shown, or checked against), or None when it can."""
    if not isinstance(schema, dict):
        return "The schema is not a JSON object."
    try:
        VALIDATOR.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        return f"The schema is not a valid JSON schema{f' at {where!r}' if where else ''}: {exc.message}"
    except RecursionError:
        return "The schema is nested too deeply."
    reference = _reference(schema)
    if reference is not None:
        return f"The schema refers to {reference[:200]!r}; a question's schema must not refer to anything."
    return None


def content_errors(schema: dict[str, Any], content: Any) -> dict[str, list[str]]:
    """What is wrong with `content` under `schema`, by field ("content" for the whole); empty when
    it satisfies it. `UnusableSchema` when the schema itself cannot be checked against."""
    problem = schema_problem(schema)
    if problem is not None:
        raise UnusableSchema(problem)
    validator = VALIDATOR(schema, registry=NOTHING)
    problems: dict[str, list[str]] = {}
    try:
        for error in validator.iter_errors(content):
            field = ".".join(str(part) for part in error.absolute_path) or "content"
            problems.setdefault(field, []).append(error.message)
    except (Unresolvable, RecursionError, re.error) as exc:  # not reachable past schema_problem: a second line
        raise UnusableSchema(f"The schema cannot be checked against: {type(exc).__name__}.") from None
    return problems
