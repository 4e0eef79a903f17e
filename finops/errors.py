"""Domain errors and their one mapping to HTTP.

Every error leaves the gateway as OpenAI error JSON:
`{"error": {"message", "type", "param", "code"}}` with the right 4xx/5xx status.
"""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler


class FinopsError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code:
            self.code = code
        self.headers = headers or {}

    def as_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(FinopsError):
    pass


class AuthenticationFailed(FinopsError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(FinopsError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(FinopsError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(FinopsError):
    status = 413
    code = "context_length_exceeded"


class RateLimited(FinopsError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    code = "budget_exceeded"

    def __init__(self, message: str, *, remaining_usd=None, **kwargs):
        super().__init__(message, **kwargs)
        self.remaining_usd = remaining_usd  # what is left of the level that refused (a Decimal), for the row and headers


class BudgetDegradedRateLimited(RateLimited):
    """Budgets could not be read (fail-open) and this user has used the fail-open limiter's minute."""

    code = "budget_degraded_rate_limit"


class UnpricedModel(FinopsError):
    """A model without a price row in force: never billed as $0."""

    status = 400
    code = "model_not_priced"


class UpstreamError(FinopsError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


def api_exception_handler(exc, context):
    if isinstance(exc, FinopsError):
        return Response(exc.as_json(), status=exc.status, headers=exc.headers)
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "error" not in response.data:
        detail = response.data.get("detail", response.data)
        response.data = {
            "error": {
                "message": str(detail),
                "type": "invalid_request_error",
                "param": None,
                "code": getattr(exc, "default_code", "invalid_request"),
            }
        }
    return response
