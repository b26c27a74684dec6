import io
import json
import re

import pytest
from django.core.management import call_command
from django.test.utils import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from rest_framework.views import APIView

ERROR_REF = "#/components/schemas/ErrorEnvelope"


def served_schema(client) -> dict:
    response = client.get("/v1/schema", {"format": "json"})
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def test_schema_generation_emits_no_warning_or_error_and_validates():
    out, err = io.StringIO(), io.StringIO()
    # --fail-on-warn raises on any warning or error; --validate checks against the OpenAPI 3 meta-schema.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out, stderr=err)
    assert "Warning" not in err.getvalue() and "Error" not in err.getvalue(), err.getvalue()
    assert out.getvalue().startswith("openapi: 3.")


def test_schema_is_served_without_an_api_key_and_is_valid_openapi(client, db):
    schema = served_schema(client)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    yaml = client.get("/v1/schema")
    assert yaml.status_code == 200 and yaml.content.startswith(b"openapi: 3.")


def test_every_v1_api_view_is_documented(client, db):
    """Each URL pattern routed to an APIView under /v1 appears in the schema (except the schema views)."""
    paths = served_schema(client)["paths"]
    documented = {re.sub(r"\{[^}]+\}", "{}", path) for path in paths}

    def walk(patterns, prefix=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                view = getattr(pattern.callback, "cls", None)
                if view is not None and issubclass(view, APIView) and route.startswith("v1/"):
                    yield route, view

    api_routes = list(walk(get_resolver().url_patterns))
    assert len(api_routes) >= 15
    for route, view in api_routes:
        if route in ("v1/schema", "v1/docs"):
            continue
        normalised = "/" + re.sub(r"<[^>]+>", "{}", route)
        assert normalised in documented, f"{route} ({view.__name__}) is not in the schema"


def test_every_operation_documents_auth_and_the_error_envelope(client, db):
    schema = served_schema(client)
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "aw_live_<secret>",
                      "description": scheme["description"]}
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    error = schema["components"]["schemas"][envelope["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert {"type", "code", "message"} <= set(error["required"])
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert len(operations) >= 20
    for path, method, operation in operations:
        assert operation.get("security") == [{"ApiKeyAuth": []}], (method, path)
        for status in ("400", "401", "403", "404", "429"):
            content = operation["responses"][status]["content"]
            assert content["application/json"]["schema"]["$ref"] == ERROR_REF, (method, path, status)
        ok = [code for code in operation["responses"] if code.startswith("2")]
        assert ok, (method, path)


def test_money_is_documented_as_numbers_never_strings(client, db):
    schema = served_schema(client)

    def walk(node, trail):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, dict) and re.search(r"(_usd|^current_spend)$", key):
                    assert value.get("type") == "number", f"{trail}.{key} is {value}"
                walk(value, f"{trail}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, trail)

    walk(schema["components"]["schemas"], "components")


def test_examples_include_the_seed_budget_request(client, db):
    schema = served_schema(client)
    post = schema["paths"]["/v1/teams/budgets"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert {"team": "backend-engineers", "monthly_budget_usd": 500.0, "alert_threshold_pct": 80,
            "hard_stop": True} in [example["value"] for example in examples.values()]
    assert schema["paths"]["/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert schema["paths"]["/v1/usage/events"]["get"]["responses"]["200"]["content"]["application/json"][
        "examples"]
    csv = schema["paths"]["/v1/usage/export.csv"]["get"]["responses"]["200"]["content"]["text/csv"]
    assert "TOTAL" in next(iter(csv["examples"].values()))["value"]


@pytest.fixture(scope="module")
def collected_static(tmp_path_factory):
    """Static files as a deployment has them (`make up` runs collectstatic): with DEBUG off, WhiteNoise serves
    STATIC_ROOT, and in production the URLs come from collectstatic's manifest."""
    with override_settings(STATIC_ROOT=tmp_path_factory.mktemp("static")):
        call_command("collectstatic", "--noinput", "--verbosity", "0")
        yield


def test_docs_are_swagger_ui_from_local_static_files(client, db, collected_static):
    response = client.get("/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    statics = [s for s in sources if s.startswith("/static/")]
    assert any("swagger-ui-bundle" in s for s in statics) and any("swagger-ui" in s and ".css" in s for s in statics)
    for path in statics:
        # Served by this server (WhiteNoise), from drf-spectacular-sidecar's files.
        assert client.get(path).status_code == 200, path
        assert "drf_spectacular_sidecar/" in path or "favicon" in path, path
    # The page's init script is a separate, same-origin request (the CSP forbids inline scripts).
    script_url = next(s for s in sources if s.startswith("/v1/docs"))
    script = client.get(script_url.replace("&amp;", "&"))
    assert script.status_code == 200 and "/v1/schema" in script.content.decode()
    assert "<script>" not in html.replace("<script src", "")
    assert "'unsafe-inline'" not in response.get("Content-Security-Policy", "")


@pytest.mark.parametrize("path", ["/v1/schema", "/v1/docs"])
def test_schema_and_docs_need_no_key_but_ignore_a_bad_one(client, db, collected_static, path):
    assert client.get(path, HTTP_AUTHORIZATION="Bearer aw_live_nonsense").status_code == 200


@pytest.mark.parametrize(("method", "path", "accept", "status", "code"), [
    ("post", "/v1/schema", "*/*", 405, "method_not_allowed"),
    ("delete", "/v1/docs", "*/*", 405, "method_not_allowed"),
    ("get", "/v1/schema?format=xml", "*/*", 406, "not_acceptable"),
    ("get", "/v1/docs?format=json", "*/*", 406, "not_acceptable"),
    ("get", "/v1/schema", "text/html", 406, "not_acceptable"),
    ("options", "/v1/docs", "*/*", 405, "method_not_allowed"),
    ("options", "/v1/docs", "text/html", 405, "method_not_allowed"),
    ("options", "/v1/schema", "application/json", 405, "method_not_allowed"),
])
def test_schema_and_docs_errors_are_the_json_envelope(client, db, method, path, accept, status, code):
    """Not a YAML body or an HTML page: every /v1 error has the one envelope."""
    response = getattr(client, method)(path, HTTP_ACCEPT=accept)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("version", ["%0A", "%0D%0Ax", "2"])
def test_a_version_parameter_is_ignored_the_api_has_one(client, db, version):
    response = client.get(f"/v1/schema?format=json&version={version}")
    assert response.status_code == 200
    assert response.json() == served_schema(client)
    assert response["Content-Disposition"] == 'inline; filename="AgentWatch API.json"'


def test_unknown_v1_paths_are_json_404_for_every_method(client, db):
    for method in ("get", "post", "delete", "patch"):
        response = getattr(client, method)("/v1/no-such-thing")
        assert response.status_code == 404, method
        assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("path", "meant"), [
    ("//v1/ingest", "/v1/ingest"),  # a base URL with a trailing slash, joined to /v1/ingest
    ("/V1/teams/budgets", "/v1/teams/budgets"),
    ("//v1//budget-check", "/v1/budget-check"),
])
def test_a_mistyped_api_path_gets_a_json_404_naming_the_path_meant(client, db, path, meant):
    """An HTML page told a script (or aw-sdk with a mistyped ingest_url) nothing."""
    for method in ("get", "post"):
        # As sent on the wire: the test client would read "//v1/…" as a URL with the host "v1".
        response = getattr(client, method)("/", PATH_INFO=path)
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "not_found" and error["message"].endswith(f"(lower case): {meant}")
    assert client.get("/no-such-page/").status_code == 404 and b"<html" in client.get("/no-such-page/").content


def test_served_schema_is_the_generated_one(client, db):
    """tests/test_schemathesis.py fuzzes the generated document; this is the one /v1/schema serves."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    generated = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    assert served_schema(client) == generated


@pytest.mark.parametrize(("accept", "media_type"), [
    ("application/json", "application/json"),
    ("application/json, text/plain, */*", "application/json"),  # axios's default: JSON first
    ("*/*", "application/vnd.oai.openapi"),
    ("", "application/vnd.oai.openapi"),
])
def test_the_schema_is_served_in_the_format_asked_for(client, db, accept, media_type):
    response = client.get("/v1/schema", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"].startswith(media_type)
    if "json" in media_type:
        assert response.json()["openapi"].startswith("3.")
