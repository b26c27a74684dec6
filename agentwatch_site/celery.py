import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentwatch_site.settings")

app = Celery("agentwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
