import datetime

from celery import shared_task

from tenants.services import api_key_touch


@shared_task(acks_late=True, time_limit=30, ignore_result=True)
def api_key_touch_task(key_id: int, used_at: str) -> None:
    api_key_touch(key_id=key_id, used_at=datetime.datetime.fromisoformat(used_at))
