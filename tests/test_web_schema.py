"""/schema works offline: a page rendered on the server, nothing loaded from a CDN."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def client():
    """The app's routes with the offline schema; no runtime: the schema calls no handler."""
    from litestar.testing import create_test_client

    from web.api import api_router
    from web.app import health, index
    from web.schema import openapi_config

    with create_test_client(route_handlers=[index, health, api_router([])],
                            openapi_config=openapi_config()) as client:
        yield client


def test_schema_page_is_self_contained_html(client):
    response = client.get("/schema")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert not re.search(r"<(script|link|img|iframe)\b", page, re.I), "loads something"
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page, re.I), "refers off the site"
    csp = response.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "http" not in csp
    assert "default-src 'self'" in csp


def test_schema_page_lists_every_operation_of_the_json_document(client):
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    page = client.get("/schema").text
    operations = [(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method != "parameters"]
    assert ("POST", "/api/ask") in operations and ("GET", "/health") in operations
    for method, path in operations:
        assert f'{method}</span><code>{path}</code>' in page, (method, path)
    assert "doc_id" in page  # a path parameter is listed
    assert "/schema/openapi.json" in page


def test_render_page_escapes_schema_text():
    from web.schema import render_page

    schema = {"openapi": "3.1.0", "info": {"title": "<x>", "version": "1"},
              "paths": {"/a": {"post": {"summary": "<script>alert(1)</script>",
                                        "requestBody": {"content": {"application/json": {
                                            "schema": {"type": "object", "properties": {
                                                "q": {"type": "string"}},
                                                "required": ["q"]}}}},
                                        "responses": {"200": {"description": "ok"}}}}}}
    page = render_page(schema, "/schema/openapi.json")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<code>q</code> *" in page  # a required body field
