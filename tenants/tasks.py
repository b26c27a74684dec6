import datetime
import logging

from celery import shared_task
from django.utils import timezone

from tenants.services import api_key_touch
from tenants.webhooks import (
    ATTEMPT_SOFT_TIME_LIMIT_SECONDS,
    ATTEMPT_TIME_LIMIT_SECONDS,
    webhook_deliveries_due,
    webhook_delivery_attempt,
)

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, time_limit=30, ignore_result=True)
def api_key_touch_task(key_id: int, used_at: str) -> None:
    api_key_touch(key_id=key_id, used_at=datetime.datetime.fromisoformat(used_at))


# A retry further out than this is left to the beat task instead of a countdown held by a worker.
COUNTDOWN_LIMIT_SECONDS = 300


@shared_task(acks_late=True, time_limit=ATTEMPT_TIME_LIMIT_SECONDS, soft_time_limit=ATTEMPT_SOFT_TIME_LIMIT_SECONDS,
             ignore_result=True)
def webhook_deliver(delivery_id: int) -> None:
    """One attempt; after a retryable failure, the next attempt is scheduled here (soon) or by the beat task."""
    delivery = webhook_delivery_attempt(delivery_id=delivery_id)
    if delivery is None or delivery.status != delivery.Status.PENDING or delivery.next_attempt_at is None:
        return
    countdown = max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds())
    if countdown <= COUNTDOWN_LIMIT_SECONDS:
        try:
            webhook_deliver.apply_async((delivery_id,), countdown=countdown)
        except Exception as exc:
            logger.warning("could not schedule webhook retry delivery_id=%s error=%s", delivery_id,
                           type(exc).__name__)


@shared_task(acks_late=True, time_limit=120, ignore_result=True)
def retry_due_webhook_deliveries() -> int:
    """Beat: sends deliveries that are due (retries, and any whose first enqueue was lost)."""
    due = webhook_deliveries_due()
    for delivery_id in due:
        webhook_deliver.delay(delivery_id)
    if due:
        logger.info("webhook deliveries due count=%s", len(due))
    return len(due)
