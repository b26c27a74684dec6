"""The one error envelope of the API: {"error": {"type", "code", "message", ["fields"], "request_id"}}.

Services raise ApiError (or a subclass); only this module turns errors into responses.
"""

import json
import logging

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder as DRFJSONEncoder

from agentwatch_site.logging import request_id_var

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 type: str | None = None, fields: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.fields = fields
        self.headers = headers or {}


class InvalidRequest(ApiError):
    pass


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


def _encodable(text: str) -> str:
    """A message that repeats the input may hold a lone surrogate (JSON's "\\ud800"), which UTF-8 cannot encode:
    it is shown escaped instead of failing the whole answer."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(*, type: str, code: str, message: str, fields: dict | None = None) -> dict:
    error = {"type": type, "code": code, "message": _encodable(message)}
    if fields:
        error["fields"] = {_encodable(str(name)): [_encodable(str(text)) for text in
                                                   (texts if isinstance(texts, (list, tuple)) else [texts])]
                           for name, texts in fields.items()}
    error["request_id"] = request_id_var.get()
    return {"error": error}


def json_error(*, status: int, type: str, code: str, message: str, fields: dict | None = None,
               headers: dict | None = None) -> HttpResponse:
    return json_response(error_body(type=type, code=code, message=message, fields=fields), status=status,
                         headers=headers)


def _flatten_fields(detail, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into {"events[3].prompt_tokens": ["..."]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                path = prefix or "non_field_errors"
            elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(_flatten_fields(value, path))
    elif isinstance(detail, list):
        if detail and all(not isinstance(item, (dict, list)) for item in detail):
            flat.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    flat.update(_flatten_fields(item, f"{prefix}[{index}]"))
    else:
        flat.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return flat


def validation_error(fields: dict[str, list[str]]) -> ApiError:
    first_path, first_messages = next(iter(fields.items()))
    message = f"Invalid request: {first_path}: {first_messages[0]}"
    if len(fields) > 1:
        message += f" (and {len(fields) - 1} more field error{'s' if len(fields) > 2 else ''})"
    return InvalidRequest(message, code="validation_error", fields=fields)


def _from_drf(exc: drf_exceptions.APIException) -> ApiError:
    if isinstance(exc, drf_exceptions.ValidationError):
        return validation_error(_flatten_fields(exc.detail) or {"non_field_errors": ["Invalid input."]})
    if isinstance(exc, drf_exceptions.ParseError):
        return InvalidRequest(f"Malformed request body: {exc.detail}", code="invalid_json")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return ApiError(str(exc.detail) + " Send Content-Type: application/json.", code="unsupported_media_type",
                        status=415)
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return ApiError(str(exc.detail), code="method_not_allowed", status=405)
    if isinstance(exc, drf_exceptions.NotAcceptable):
        return ApiError(str(exc.detail), code="not_acceptable", status=406)
    if isinstance(exc, drf_exceptions.NotFound):
        return NotFound(str(exc.detail))
    if isinstance(exc, drf_exceptions.Throttled):
        return RateLimited(str(exc.detail), retry_after=int(exc.wait or 60))
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "invalid_api_key"
        return ApiError(str(exc.detail), code=code, status=401, type="authentication_error")
    if isinstance(exc, drf_exceptions.PermissionDenied):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "permission_denied"
        return ApiError(str(exc.detail), code=code, status=403, type="permission_error")
    return ApiError(str(exc.detail), code=str(exc.default_code), status=exc.status_code)


def api_error(exc: Exception) -> ApiError:
    """Any exception raised while serving a /v1 request, as the ApiError the client is shown (unexpected ones
    logged with their traceback, a database outage as 503)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Http404):
        return NotFound("Not found.")
    if isinstance(exc, PermissionDenied):
        return ApiError("You do not have permission to do this.", code="permission_denied", status=403,
                        type="permission_error")
    if isinstance(exc, drf_exceptions.APIException):
        return _from_drf(exc)
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("database unavailable error=%s detail=%s", type(exc).__name__, str(exc).strip()[:300])
        return ServiceUnavailable("The database is unavailable; retry shortly.", code="database_unavailable")
    if isinstance(exc, DatabaseError):
        logger.exception("database error")
    else:
        logger.exception("unhandled API error")
    return ApiError("Internal server error; the request id identifies it in the server logs.",
                    code="internal_error", status=500, type="api_error")


def _error_headers(error: ApiError) -> dict:
    if error.status == 401:
        return {**error.headers, "WWW-Authenticate": 'Bearer realm="agentwatch"'}
    return error.headers


def api_exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: every error of every DRF-dispatched /v1 view leaves through here."""
    error = api_error(exc)
    return Response(error_body(type=error.type, code=error.code, message=error.message, fields=error.fields),
                    status=error.status, headers=_error_headers(error))


def api_error_response(exc: Exception) -> HttpResponse:
    """The same envelope for the views dispatched without DRF (tenants.api_base.LeanDispatch)."""
    error = api_error(exc)
    return json_error(status=error.status, type=error.type, code=error.code, message=error.message,
                      fields=error.fields, headers=_error_headers(error))


def json_response(data, *, status: int = 200, headers: dict | None = None) -> HttpResponse:
    """JSON exactly as DRF's JSONRenderer writes it with our settings (compact, UTF-8, Decimal as a number, no
    NaN), for the views that answer without DRF."""
    body = json.dumps(data, cls=DRFJSONEncoder, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # Valid JSON, but not valid JavaScript: escaped, as JSONRenderer does.
    body = body.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return HttpResponse(body.encode(), status=status, headers=headers, content_type="application/json")


def api_not_found(request, *args, **kwargs):
    """Catch-all for unknown /v1 paths, so they get the envelope (and never an APPEND_SLASH redirect)."""
    message = f"No API endpoint at {request.path}."
    if request.path.endswith("/") and len(request.path) > 4:
        message += " API paths have no trailing slash."
    return json_error(status=404, type="not_found_error", code="not_found", message=message)
