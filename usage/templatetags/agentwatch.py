from decimal import Decimal, InvalidOperation
from urllib.parse import quote

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.html import format_html

from agentwatch_site.money import quantize
from usage.services.pricing import COST_QUANTUM

register = template.Library()

# Session ids a browser would drop from a path even escaped ("%2e" is "." to it): their page is asked for by query.
_DOT_SEGMENTS = (".", "..")


@register.filter
def session_url(session_id: str) -> str:
    """A session's page. The id goes into the path with its "/" escaped too (`{% url %}` keeps them), so a browser
    never reads a "." or ".." part of an id such as `a/../b` as a move up the path; an id that is itself "." or
    ".." goes into the query string."""
    if session_id in _DOT_SEGMENTS:
        return f"{reverse('session-by-query')}?id={quote(session_id, safe='')}"
    return f"{reverse('sessions')}{quote(session_id, safe='')}/"


@register.simple_tag(takes_context=True)
def open_anomaly_count(context, tenant) -> int:
    """Open anomalies for the navigation badge: one indexed count per page (not per fragment)."""
    if tenant is None:
        return 0
    request = context.get("request")
    cached = getattr(request, "_open_anomaly_count", None)
    if cached is None:
        from usage.models import Anomaly

        cached = Anomaly.objects.filter(tenant=tenant, status=Anomaly.Status.OPEN).count()
        if request is not None:
            request._open_anomaly_count = cached
    return cached


@register.simple_tag(takes_context=True)
def page_form_fields(context) -> str:
    """What every dashboard POST form carries: the CSRF token, and the organisation the page shows, so a form
    submitted from a tab left on another organisation is refused (tenants.views.member_required; htmx requests
    send it as a header from <body>)."""
    from tenants.views import PAGE_TENANT_FIELD

    request, tenant = context["request"], context.get("current_tenant")
    fields = format_html('<input type="hidden" name="csrfmiddlewaretoken" value="{}">', get_token(request))
    if tenant is not None:
        fields += format_html('<input type="hidden" name="{}" value="{}">', PAGE_TENANT_FIELD, tenant.pk)
    return fields


@register.filter
def usd(value, places=None) -> str:
    """$1,234.56 for money; small amounts keep four decimals so a $0.0042 call does not read as $0.00, and smaller
    ones as many as they need, up to the ten that costs have ($0.000018, not $0.0000)."""
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    if places is None:
        places = 2 if abs(amount) >= 1 or amount == 0 else 4
        if amount and abs(amount) < Decimal("0.00005"):  # would round to $0.0000
            places = max(4, min(10, -quantize(abs(amount), COST_QUANTUM).normalize().as_tuple().exponent))
    quantum = Decimal(1).scaleb(-int(places))
    rounded = quantize(amount, quantum)
    sign = "-" if rounded < 0 else ""
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    return f"{sign}${intcomma(int(whole))}{'.' + frac if frac else ''}"


@register.filter
def compact(value) -> str:
    """1.2k, 3.4M for token counts."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}{suffix}"
    return f"{int(number)}"


@register.filter
def pct(value, places=0) -> str:
    if value is None:
        return "—"
    return f"{float(value):.{int(places)}f}%"


@register.filter
def per_mtok(value) -> str:
    """$0.15, $2.50, $0.075 for prices per million tokens: at least two decimals, no trailing zeros beyond."""
    if value is None:
        return "—"
    amount = Decimal(str(value)).normalize()
    text = f"{amount:f}"
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"
