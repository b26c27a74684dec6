import logging
import re
import uuid

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponseBadRequest

from agentwatch_site.errors import json_error
from agentwatch_site.logging import request_id_var

logger = logging.getLogger(__name__)

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def is_api_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


# Answered without a session or a tenant, and never redirected to HTTPS (settings.SECURE_REDIRECT_EXEMPT).
PROBE_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


# JSON answers load nothing and must never be framed or run as a document: the strictest policy, a constant.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"


class MessageMiddleware(DjangoMessageMiddleware):
    """Flash messages for pages only: an API request has none to show, and building the message storage on every
    telemetry request is wasted."""

    def process_request(self, request):
        if not is_api_path(request.path):
            super().process_request(request)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """Pages (and the Swagger UI at /v1/docs) get the configured policy with its nonces, built per response;
    JSON API answers get API_CONTENT_SECURITY_POLICY without building anything (it is on every telemetry
    request)."""

    @staticmethod
    def _is_json_api(request) -> bool:
        return is_api_path(request.path) and not request.path.startswith("/v1/docs")

    def process_request(self, request):
        if not self._is_json_api(request):
            super().process_request(request)

    def process_response(self, request, response):
        if not self._is_json_api(request):
            return super().process_response(request, response)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = API_CONTENT_SECURITY_POLICY
        return response


class RequestIdMiddleware:
    """Gives every request an id (logged on each line, returned in X-Request-ID and in error envelopes),
    refuses oversized API bodies with 413 before anything reads them, and turns any exception escaping an
    API view into the JSON envelope instead of an HTML page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if _CLIENT_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        # Not reset on the way out: Django logs the response (django.request) after the middleware returns,
        # and that line must carry the id too. The next request on this thread sets its own.
        request_id_var.set(request_id)
        if self._has_null_character(request):
            # PostgreSQL cannot store or compare a NUL in text: refuse it here, once, for every view.
            if not is_api_path(request.path):
                return HttpResponseBadRequest("Null characters are not allowed in URLs.", content_type="text/plain")
            response = json_error(status=400, type="invalid_request_error", code="invalid_request",
                                  message="Null characters (%00) are not allowed in the URL or query string.")
        elif is_api_path(request.path) and self._body_too_large(request):
            response = json_error(
                status=413, type="invalid_request_error", code="request_too_large",
                message=f"Request body exceeds {settings.INGEST_MAX_BODY_BYTES} bytes; split it into smaller batches.",
            )
        elif is_api_path(request.path) and settings.SECURE_SSL_REDIRECT and not request.is_secure():
            # Where SecurityMiddleware would redirect to HTTPS: a 301 an API client does not follow (aw-sdk drops
            # the event, or fails open), with an HTML body. The key has crossed the network in clear already.
            response = json_error(
                status=403, type="invalid_request_error", code="https_required",
                message=f"This server takes API requests over HTTPS only: use https://{request.get_host()}"
                        f"{request.path} (and treat the API key just sent over plain HTTP as exposed).",
            )
        elif is_api_path(request.path) and (encoding := self._content_encoding(request)):
            response = json_error(
                status=415, type="invalid_request_error", code="unsupported_content_encoding",
                message=f"Content-Encoding {encoding[:40]!r} is not supported: send the body uncompressed.",
            )
        else:
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response

    @staticmethod
    def _has_null_character(request) -> bool:
        return "%00" in request.META.get("QUERY_STRING", "") or "\x00" in request.path

    @staticmethod
    def _body_too_large(request) -> bool:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        return length > settings.INGEST_MAX_BODY_BYTES

    @staticmethod
    def _content_encoding(request) -> str:
        """A Content-Encoding other than identity: the body would be read as if it were not encoded."""
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip()
        return "" if encoding.lower() in ("", "identity") else encoding

    def process_exception(self, request, exception):
        if not is_api_path(request.path):
            return None
        if isinstance(exception, RequestDataTooBig):
            return json_error(status=413, type="invalid_request_error", code="request_too_large",
                              message="Request body too large.")
        logger.exception("unhandled error outside an API view path=%s", request.path)
        return json_error(status=500, type="api_error", code="internal_error",
                          message="Internal server error; the request id identifies it in the server logs.")
