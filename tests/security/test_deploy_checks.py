import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_program(command: list[str], **env_overrides) -> subprocess.CompletedProcess:
    # Only what the test sets: nothing from the outer run (its SECRET_KEY, or the browser tests'
    # DJANGO_ALLOW_ASYNC_UNSAFE) may leak into the configuration under check.
    inherited = ("DATABASE_URL", "REDIS_URL", "DEBUG", "HTTPS", "SECRET_KEY", "ALLOWED_HOSTS",
                 "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(env_overrides)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def run_manage(*args, **env_overrides) -> subprocess.CompletedProcess:
    return run_program([sys.executable, "manage.py", *args], **env_overrides)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """A configuration error stops the program with one line on stderr, not a traceback."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/agentwatch",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
    "DEBUG": "0",
    "HTTPS": "1",
    "ALLOWED_HOSTS": "agentwatch.example.com",
}


def test_check_deploy_with_production_settings_has_no_warnings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_off_without_secret_key_refuses_to_start():
    env = dict(PRODUCTION_ENV)
    env.pop("SECRET_KEY")
    result = run_manage("check", **env)
    assert "SECRET_KEY must be set" in one_line_error(result)


def test_a_bad_boolean_in_the_environment_fails_loudly():
    result = run_manage("check", DEBUG="maybe")
    assert one_line_error(result) == ("manage.py: configuration error: DEBUG must be a boolean (1/0, true/false), "
                                      "got 'maybe'")


def test_check_deploy_does_not_warn_about_the_documented_proxy_and_preload_opt_outs():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", SECURE_SSL_REDIRECT="0",
                        SECURE_HSTS_PRELOAD="0", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (2 silenced)" in result.stdout


def test_debug_off_without_allowed_hosts_refuses_to_start():
    # Else gunicorn starts and answers every request, /healthz included, with 400.
    for value in ("", " , "):
        result = run_manage("check", **{**PRODUCTION_ENV, "ALLOWED_HOSTS": value})
        assert "ALLOWED_HOSTS must be set when DEBUG is off" in one_line_error(result)


@pytest.mark.parametrize("value", ["https://agentwatch.example.com", "agentwatch.example.com:8000",
                                   "agentwatch.example.com 127.0.0.1", "agentwatch.example.com/api",
                                   "*.example.com", "ex*ample.com", "example.com.", "::1", "[:]", "bücher.de"])
def test_an_allowed_hosts_entry_that_is_not_a_host_name_refuses_to_start(value):
    # Django would match it against no Host header: every request, /healthz included, would get 400.
    from django.http.request import validate_host

    assert not any(validate_host(host, [value]) for host in ("agentwatch.example.com", "www.example.com",
                                                             "example.com", "[::1]", "xn--bcher-kva.de"))
    result = run_manage("check", **{**PRODUCTION_ENV, "ALLOWED_HOSTS": f"localhost,{value}"})
    assert f"ALLOWED_HOSTS entry {value!r} is not a host name Django can match" in one_line_error(result)


@pytest.mark.parametrize(("name", "value", "message"), [
    # PostgreSQL refuses more than 2^31 - 1 ms on every connect: every request would be a 503.
    ("DB_IDLE_IN_TRANSACTION_TIMEOUT", "2592000",
     "DB_IDLE_IN_TRANSACTION_TIMEOUT must be at most 2147483, got 2592000"),
    # An attempt waits this long for DNS and as long again for the receiver, inside the task's 45 s soft limit.
    ("WEBHOOK_TIMEOUT_SECONDS", "1e10", "WEBHOOK_TIMEOUT_SECONDS must be at most 20, got 10000000000.0"),
    ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/prometheus",
     "PROMETHEUS_MULTIPROC_DIR must name an existing directory this process can write, got '/nonexistent/prometheus'"),
])
def test_values_that_would_fail_later_are_refused_at_start_up(name, value, message):
    """Each was accepted and then failed at every connect, every webhook DNS lookup, or each worker's boot."""
    result = run_manage("check", **{**PRODUCTION_ENV, name: value})
    assert one_line_error(result) == f"manage.py: configuration error: {message}"


def test_allowed_hosts_takes_names_addresses_subdomain_patterns_and_a_wildcard():
    hosts = "agentwatch.example.com,.example.org,10.0.0.5,[::1],*,localhost,xn--bcher-kva.de,my_host"
    result = run_manage("check", **{**PRODUCTION_ENV, "ALLOWED_HOSTS": hosts})
    assert result.returncode == 0, result.stderr


def test_a_malformed_database_url_is_a_clear_error_that_hides_the_password():
    result = run_manage("check", **{**PRODUCTION_ENV, "DATABASE_URL": "postgress://aw:hunter2@db:5432/aw"})
    assert one_line_error(result).startswith("manage.py: configuration error: DATABASE_URL has an unknown scheme")
    assert "hunter2" not in result.stderr


def test_a_malformed_redis_url_fails_at_start_up_not_on_every_request():
    result = run_manage("check", **{**PRODUCTION_ENV, "REDIS_URL": "localhost:6379"})
    assert "REDIS_URL is not a Redis URL" in one_line_error(result)


def test_an_unknown_log_level_is_a_clear_error():
    result = run_manage("check", LOG_LEVEL="verbose")
    assert "LOG_LEVEL must be one of" in one_line_error(result)


def test_a_webhook_ca_bundle_that_is_not_a_file_is_a_clear_error():
    result = run_manage("check", WEBHOOK_CA_BUNDLE="/etc/agentwatch/missing-ca.pem")
    assert "WEBHOOK_CA_BUNDLE must name a PEM file" in one_line_error(result)


@pytest.mark.parametrize(("program", "command"), [
    ("gunicorn", ["gunicorn", "-c", "gunicorn.conf.py", "agentwatch_site.wsgi", "--bind", "127.0.0.1:0"]),
    ("celery", ["celery", "-A", "agentwatch_site", "worker"]),
    ("celery", ["celery", "-A", "agentwatch_site", "beat"]),
])
def test_gunicorn_and_celery_stop_on_a_bad_setting_with_one_line_before_binding_or_connecting(program, command):
    binary = str(Path(sys.executable).parent / command[0])
    result = run_program([binary, *command[1:]], **{**PRODUCTION_ENV, "DEBUG": "maybe"})
    # gunicorn logs "Starting gunicorn" before its hooks run; nothing about workers, which never start.
    lines = [line for line in result.stderr.strip().splitlines() if "Starting gunicorn" not in line]
    assert result.returncode != 0
    assert lines == [f"{program}: configuration error: DEBUG must be a boolean (1/0, true/false), got 'maybe'"], (
        result.stderr)


def test_with_https_on_an_api_request_over_plain_http_gets_a_json_refusal_not_a_redirect(settings, client, db):
    """A 301 with an HTML body is not followed by API clients: aw-sdk dropped the event (or failed open) with no
    word of why. The answer is the envelope, saying to use HTTPS."""
    settings.SECURE_SSL_REDIRECT = True
    response = client.post("/v1/ingest", {"model": "gpt-4o"}, content_type="application/json",
                           HTTP_AUTHORIZATION="Bearer aw_live_x", HTTP_HOST="testserver")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "https_required" and "https://testserver/v1/ingest" in error["message"]
    assert client.get("/login/").status_code == 301  # pages are still redirected
    secure = client.get("/v1/budget-check?session_id=s&limit_usd=1", secure=True,
                        HTTP_AUTHORIZATION="Bearer aw_live_x")
    assert secure.status_code == 401  # over HTTPS it goes on to authentication as before


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_a_probe_with_a_host_not_listed_gets_the_json_reason(client, settings, path):
    """An orchestrator's probe without a listed Host header read "could not be understood" in HTML."""
    settings.ALLOWED_HOSTS = ["agentwatch.example.com"]
    response = client.get(path, HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "disallowed_host"


def test_with_https_on_probes_and_the_metrics_scrape_are_answered_over_plain_http():
    """A local Prometheus and the orchestrator's probes speak plain HTTP to the process; pages are redirected."""
    probe = ("from django.test import Client; c = Client(HTTP_HOST='agentwatch.example.com'); "
             "print([c.get(p, REMOTE_ADDR='127.0.0.1').status_code for p in ('/livez', '/metrics', '/login/')])")
    result = run_manage("shell", "-c", probe, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[200, 200, 301]"
