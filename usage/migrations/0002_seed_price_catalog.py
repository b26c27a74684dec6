"""Global price catalogue: public list prices in USD per million tokens (input, output) when this was written.
Tenants override any row in Settings → Pricing; later price changes ship as new data migrations."""

from decimal import Decimal

from django.db import migrations

CATALOG = [
    # OpenAI
    ("openai", "gpt-4o", "2.50", "10.00"),
    ("openai", "gpt-4o-mini", "0.15", "0.60"),
    ("openai", "gpt-4.1", "2.00", "8.00"),
    ("openai", "gpt-4.1-mini", "0.40", "1.60"),
    ("openai", "gpt-4.1-nano", "0.10", "0.40"),
    ("openai", "gpt-5", "1.25", "10.00"),
    ("openai", "gpt-5-mini", "0.25", "2.00"),
    ("openai", "gpt-5-nano", "0.05", "0.40"),
    ("openai", "o1", "15.00", "60.00"),
    ("openai", "o3", "2.00", "8.00"),
    ("openai", "o3-mini", "1.10", "4.40"),
    ("openai", "o4-mini", "1.10", "4.40"),
    ("openai", "gpt-4-turbo", "10.00", "30.00"),
    ("openai", "gpt-3.5-turbo", "0.50", "1.50"),
    # Anthropic
    ("anthropic", "claude-3-5-sonnet", "3.00", "15.00"),
    ("anthropic", "claude-3-5-haiku", "0.80", "4.00"),
    ("anthropic", "claude-3-opus", "15.00", "75.00"),
    ("anthropic", "claude-3-haiku", "0.25", "1.25"),
    ("anthropic", "claude-sonnet-4", "3.00", "15.00"),
    ("anthropic", "claude-sonnet-4-5", "3.00", "15.00"),
    ("anthropic", "claude-opus-4", "15.00", "75.00"),
    ("anthropic", "claude-opus-4-1", "15.00", "75.00"),
    ("anthropic", "claude-haiku-4-5", "1.00", "5.00"),
    # Google
    ("google", "gemini-1.5-pro", "1.25", "5.00"),
    ("google", "gemini-1.5-flash", "0.075", "0.30"),
    ("google", "gemini-2.0-flash", "0.10", "0.40"),
    ("google", "gemini-2.5-pro", "1.25", "10.00"),
    ("google", "gemini-2.5-flash", "0.30", "2.50"),
    # Meta (typical hosted list prices)
    ("meta", "llama-3.1-405b-instruct", "3.00", "3.00"),
    ("meta", "llama-3.1-70b-instruct", "0.88", "0.88"),
    ("meta", "llama-3.1-8b-instruct", "0.18", "0.18"),
    ("meta", "llama-3.3-70b-instruct", "0.88", "0.88"),
    # Mistral
    ("mistral", "mistral-large-latest", "2.00", "6.00"),
    ("mistral", "mistral-small-latest", "0.20", "0.60"),
    ("mistral", "codestral-latest", "0.30", "0.90"),
    ("mistral", "open-mistral-nemo", "0.15", "0.15"),
]


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    for provider, model, input_price, output_price in CATALOG:
        ModelPrice.objects.update_or_create(
            tenant=None, model=model,
            defaults={"provider": provider, "input_per_mtok": Decimal(input_price),
                      "output_per_mtok": Decimal(output_price)},
        )


def unseed(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    ModelPrice.objects.filter(tenant=None, model__in=[row[1] for row in CATALOG]).delete()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
