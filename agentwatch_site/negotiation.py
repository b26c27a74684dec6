from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.settings import api_settings

# What agents' and scripts' HTTP clients send (httpx, curl, requests: */*; many send nothing): any renderer will do,
# and DRF's negotiation would pick the view's first one. It is picked here without parsing anything (the
# negotiation cost a few percent of every telemetry request); so is the first renderer when exactly its media type
# is asked for, or, for JSON, axios's default list (JSON first). Anything else goes through DRF's negotiation (e.g.
# `Accept: application/json` for /v1/schema, whose first renderer is YAML).
_ANY = frozenset({"", "*/*"})
_AXIOS = "application/json, text/plain, */*"


def answers_without_negotiation(meta: dict, media_type: str) -> bool:
    """Whether a request may get the view's first renderer (of `media_type`) without DRF's negotiation: it accepts
    anything, or that type first, and sends no `?format=`."""
    accept = meta.get("HTTP_ACCEPT", "")
    return ((accept in _ANY or accept == media_type or (accept == _AXIOS and media_type == "application/json"))
            and f"{api_settings.URL_FORMAT_OVERRIDE}=" not in meta.get("QUERY_STRING", ""))


def not_offered(format: str, offered) -> NotAcceptable:
    """`?format=` naming no format of the view: a 406 saying what there is (DRF answers 404 Not Found, as if the
    resource did not exist)."""
    return NotAcceptable(f"No {format[:20]!r} format here; this endpoint answers in: {', '.join(sorted(offered))}.")


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        if format_suffix is None and answers_without_negotiation(request.META, renderers[0].media_type):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)

    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            raise not_offered(format, {renderer.format for renderer in renderers})
        return matching
