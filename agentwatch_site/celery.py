import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentwatch_site.settings")

class _Celery(Celery):
    def on_configure(self):
        """Before Celery reads the settings (the worker and beat at start-up): a bad environment variable stops them
        with one line saying which, not a traceback."""
        from agentwatch_site.env import settings_or_exit

        settings_or_exit("celery")


app = _Celery("agentwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _log_as_settings_say(**kwargs):
    """The worker and beat log as settings.LOGGING says (LOG_LEVEL, LOG_JSON, the request id), like gunicorn.
    Without a receiver for this signal, Celery sets the root logger itself: the level from `--loglevel` (WARNING
    when not given), so LOG_LEVEL would not apply, and its own handler and format."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
