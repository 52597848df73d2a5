"""The OpenAPI schema tells the truth about errors: every operation lists the error statuses it can
answer, each with the envelope's schema (`ErrorEnvelope`, its `code` one of `ErrorCode`).

Which statuses apply is read off the view, so a new view is documented without a decorator:
- 400 when the operation takes input (a body, query parameters or a path parameter);
- 401 always (every API view authenticates, or refuses credentials like the login);
- 404 when it names a resource (a path parameter, or an `..._id` in its input);
- 413 and 415 when it takes a body (size limit, JSON only);
- 429 when the view is throttled (with `Retry-After`);
- anything else a view declares in `error_statuses` (409 for an idempotency conflict, 503 for a
  required service).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiParameter

from common.openapi import ENVELOPE, envelope_schema, error_response


class AutoSchema(openapi.AutoSchema):
    def _error_statuses(self) -> set[int]:
        view = self.view
        statuses = {401}
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        parameters = [p for p in self.get_override_parameters() if p is not None]
        has_path_parameter = "{" in self.path
        if has_body or parameters or has_path_parameter:
            statuses.add(400)
        if has_body:
            statuses |= {413, 415}
        if has_path_parameter or self._names_a_resource(parameters):
            statuses.add(404)
        if getattr(view, "throttle_scope", None) or getattr(view, "throttle_classes", None):
            statuses.add(429)
        statuses |= set(getattr(view, "error_statuses", ()))
        return statuses

    def _names_a_resource(self, parameters: list[Any]) -> bool:
        serializers = [*parameters]
        if self.method in ("POST", "PUT", "PATCH"):
            serializers.append(self.get_request_serializer())
        for serializer in serializers:
            if serializer is None or isinstance(serializer, OpenApiParameter):
                continue
            try:
                fields = (serializer() if isinstance(serializer, type) else serializer).fields
            except Exception:  # noqa: BLE001 - not a serializer we can inspect: names no resource
                continue
            if any(name.endswith("_id") for name in fields):
                return True
        return False

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for status in sorted(self._error_statuses()):
            responses.setdefault(str(status), error_response(status))
        return responses


def add_error_envelope(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: the envelope component every error response refers to."""
    result.setdefault("components", {}).setdefault("schemas", {})[ENVELOPE] = envelope_schema()
    return result
