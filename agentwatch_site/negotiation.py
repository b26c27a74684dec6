from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation

# What agents' HTTP clients send (httpx: */*; many send nothing): any renderer will do, and DRF's negotiation
# would pick the view's first one. It is picked here without parsing anything (the negotiation cost a few percent
# of every telemetry request); so is the first renderer when exactly its media type is asked for. Anything else
# goes through DRF's negotiation (e.g. `Accept: application/json` for /v1/schema, whose first renderer is YAML).
_ANY = frozenset({"", "*/*"})


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        accept = request.META.get("HTTP_ACCEPT", "")
        if (format_suffix is None and (accept in _ANY or accept == renderers[0].media_type)
                and f"{self.settings.URL_FORMAT_OVERRIDE}=" not in request.META.get("QUERY_STRING", "")):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)

    def filter_renderers(self, renderers, format):
        """`?format=` naming no renderer of the view: a 406 saying what there is (DRF answers 404 Not Found, as if
        the resource did not exist)."""
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            offered = ", ".join(sorted({renderer.format for renderer in renderers}))
            raise NotAcceptable(f"No {format[:20]!r} format here; this endpoint answers in: {offered}.")
        return matching
