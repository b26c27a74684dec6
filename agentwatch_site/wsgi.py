import io
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentwatch_site.settings")


class ChunkedRequestBodies:
    """Reads a `Transfer-Encoding: chunked` request body for Django.

    gunicorn de-chunks such a body and marks `wsgi.input` as ending by itself (`wsgi.input_terminated`), but
    Django reads CONTENT_LENGTH bytes and, with no length, none: a chunked POST /v1/ingest arrived empty. The body
    is read here up to one byte past `max_bytes`, so an oversized one still gets the usual 413."""

    def __init__(self, app, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        if (environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH")
                and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
            body = environ["wsgi.input"].read(self.max_bytes + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _application():
    django_app = get_wsgi_application()
    from django.conf import settings

    return ChunkedRequestBodies(django_app, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


application = _application()
