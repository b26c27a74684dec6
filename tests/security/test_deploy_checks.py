import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args, **env_overrides) -> subprocess.CompletedProcess:
    # Only what the test sets: nothing from the outer run (its SECRET_KEY, or the browser tests'
    # DJANGO_ALLOW_ASYNC_UNSAFE) may leak into the configuration under check.
    inherited = ("DATABASE_URL", "REDIS_URL", "DEBUG", "HTTPS", "SECRET_KEY", "ALLOWED_HOSTS",
                 "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


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
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_bad_boolean_in_the_environment_fails_loudly():
    result = run_manage("check", DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_check_deploy_does_not_warn_about_the_documented_proxy_and_preload_opt_outs():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", SECURE_SSL_REDIRECT="0",
                        SECURE_HSTS_PRELOAD="0", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (2 silenced)" in result.stdout


def test_debug_off_without_allowed_hosts_refuses_to_start():
    # Else gunicorn starts and answers every request, /healthz included, with 400.
    for value in ("", " , "):
        result = run_manage("check", **{**PRODUCTION_ENV, "ALLOWED_HOSTS": value})
        assert result.returncode != 0
        assert "ALLOWED_HOSTS must be set when DEBUG is off" in result.stderr.splitlines()[-1]


def test_a_malformed_database_url_is_a_clear_error_that_hides_the_password():
    result = run_manage("check", **{**PRODUCTION_ENV, "DATABASE_URL": "postgress://aw:hunter2@db:5432/aw"})
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: DATABASE_URL has an unknown scheme")
    assert "hunter2" not in result.stderr


def test_a_malformed_redis_url_fails_at_start_up_not_on_every_request():
    result = run_manage("check", **{**PRODUCTION_ENV, "REDIS_URL": "localhost:6379"})
    assert result.returncode != 0
    assert "REDIS_URL is not a Redis URL" in result.stderr.splitlines()[-1]


def test_an_unknown_log_level_is_a_clear_error():
    result = run_manage("check", LOG_LEVEL="verbose")
    assert result.returncode != 0
    assert "LOG_LEVEL must be one of" in result.stderr.splitlines()[-1]


def test_a_webhook_ca_bundle_that_is_not_a_file_is_a_clear_error():
    result = run_manage("check", WEBHOOK_CA_BUNDLE="/etc/agentwatch/missing-ca.pem")
    assert result.returncode != 0
    assert "WEBHOOK_CA_BUNDLE must name a PEM file" in result.stderr.splitlines()[-1]
