"""An offline /schema: the OpenAPI document as one self-contained HTML page.

Litestar's own viewers (Swagger, Redoc, Scalar, ...) load their scripts from a CDN, so
on a machine without network /schema was a blank page. `openapi_config()` serves instead
a page rendered here on the server from the same schema as /schema/openapi.json: every
path and method with its summary, description, parameters, request body and responses.
It has no script at all; its one inline style is allowed by its hash in the CSP, so the
page loads nothing from anywhere, not even from this origin.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from litestar import Request, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin

METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
  background: #f6f7f9; margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 1.5rem; }
h1 { margin: 0 0 .25rem; } h2 { margin: 2rem 0 .75rem; } h3 { margin: 0; font-size: 1rem; }
h4 { margin: .9rem 0 .3rem; font-size: .8rem; text-transform: uppercase; color: #667085; }
.muted { color: #667085; font-size: .875rem; }
.op, .model { background: #fff; border: 1px solid #e4e7ec; border-radius: 10px;
  padding: .9rem 1.1rem; margin: .8rem 0; }
.method { display: inline-block; min-width: 4.2rem; text-align: center; border-radius: 6px;
  padding: .05rem .4rem; margin-right: .5rem; font: 700 .8rem ui-monospace, monospace;
  color: #fff; background: #667085; }
.get { background: #067647; } .post { background: #4f46e5; } .delete { background: #b42318; }
.put, .patch { background: #b45309; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; }
pre { background: #f6f7f9; padding: .6rem .8rem; border-radius: 6px; overflow-x: auto;
  margin: .3rem 0; }
.text { white-space: pre-line; margin: .4rem 0; }
table { border-collapse: collapse; width: 100%; font-size: .875rem; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem;
  border-top: 1px solid #e4e7ec; }
th { color: #667085; font-weight: 600; border-top: 0; }
nav ul { columns: 2; padding-left: 1.2rem; }
a { color: #4f46e5; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
# Nothing but this page's own style: no scripts, frames, images or fonts from anywhere.
SCHEMA_CSP = (f"default-src 'self'; style-src 'sha256-{_STYLE_HASH}'; script-src 'none'; "
              "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def openapi_config(title: str = "Cited API") -> OpenAPIConfig:
    """/schema: the offline page; /schema/openapi.json: the document (Litestar adds it)."""
    router = Router("/schema", route_handlers=[], include_in_schema=False,
                    response_headers={"Content-Security-Policy": SCHEMA_CSP,
                                      "X-Content-Type-Options": "nosniff"})
    return OpenAPIConfig(title=title, version=_version(), use_handler_docstrings=True,
                         render_plugins=[OfflineRenderPlugin()], openapi_router=router)


def _version() -> str:
    try:
        return version("rag-local")
    except PackageNotFoundError:
        return "0"


class OfflineRenderPlugin(OpenAPIRenderPlugin):
    """Renders the schema as static HTML (no favicon link: the default one is on a CDN)."""

    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return render_page(openapi_schema, self.get_openapi_json_route(request)).encode()


# -- the page ----------------------------------------------------------------------
def render_page(schema: dict, json_url: str) -> str:
    info = schema.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    operations = [(path, method, item[method], item.get("parameters", []))
                  for path, item in schema.get("paths", {}).items()
                  for method in METHODS if method in item]
    toc = "".join(f'<li><a href="#{_anchor(m, p)}"><code>{m.upper()} {escape(p)}</code></a></li>'
                  for p, m, _, _ in operations)
    models = schema.get("components", {}).get("schemas", {})
    return "".join([
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        _text(info.get("description")),
        f'<p class="muted">OpenAPI {escape(str(schema.get("openapi", "")))} · '
        f'<a href="{escape(json_url)}">{escape(json_url)}</a> (the same document as JSON)</p>',
        f"<nav><h2>Routes</h2><ul>{toc}</ul></nav><h2>Operations</h2>",
        *(_operation(*op) for op in operations),
        "<h2>Models</h2>" if models else "",
        *(f'<section class="model" id="model-{escape(name)}"><h3>{escape(name)}</h3>'
          f"{_schema_block(body)}</section>" for name, body in models.items()),
        "</main></body></html>",
    ])


def _operation(path: str, method: str, op: dict, shared: list) -> str:
    parameters = shared + op.get("parameters", [])
    summary = op.get("summary", "")
    return "".join([
        f'<section class="op" id="{_anchor(method, path)}">',
        f'<h3><span class="method {method}">{method.upper()}</span><code>{escape(path)}</code>',
        f' <span class="muted">{escape(summary)}</span></h3>' if summary else "</h3>",
        _text(op.get("description")),
        _parameters(parameters) if parameters else "",
        _request_body(op["requestBody"]) if "requestBody" in op else "",
        _responses(op.get("responses", {})),
        "</section>",
    ])


def _parameters(parameters: list) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(p.get('name', ''))}</code></td><td>{escape(p.get('in', ''))}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_type(p.get('schema', {}))}</td>"
        f"<td>{escape(p.get('description', ''))}</td></tr>"
        for p in parameters if "$ref" not in p)
    return ("<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Required</th>"
            f"<th>Type</th><th>Description</th></tr>{rows}</table>")


def _request_body(body: dict) -> str:
    required = " (required)" if body.get("required") else ""
    return (f"<h4>Request body{required}</h4>" + _text(body.get("description"))
            + _content(body.get("content", {})))


def _responses(responses: dict) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(str(status))}</code></td>"
        f"<td>{escape(r.get('description', ''))}{_content(r.get('content', {}))}</td></tr>"
        for status, r in responses.items())
    return f"<h4>Responses</h4><table><tr><th>Status</th><th>Body</th></tr>{rows}</table>"


def _content(content: dict) -> str:
    return "".join(f"<div><code>{escape(media)}</code>: {_type(c.get('schema', {}))}"
                   f"{_schema_block(c.get('schema', {}))}</div>"
                   for media, c in content.items())


def _schema_block(schema: dict) -> str:
    """An object's properties as a table; other schemas need no more than their type."""
    properties = schema.get("properties")
    if not properties:
        return "" if set(schema) <= {"type", "$ref", "format"} else _json(schema)
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code>{' *' if name in required else ''}</td>"
        f"<td>{_type(prop)}</td><td>{escape(prop.get('description', ''))}</td></tr>"
        for name, prop in properties.items())
    return f"<table><tr><th>Field</th><th>Type</th><th>Description</th></tr>{rows}</table>"


def _type(schema: dict) -> str:
    """A one-line type: references link to their model, unions are joined with |."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#model-{escape(name)}">{escape(name)}</a>'
    for union in ("oneOf", "anyOf", "allOf"):
        if union in schema:
            joiner = " &amp; " if union == "allOf" else " | "
            return joiner.join(_type(s) for s in schema[union])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        text = " | ".join(escape(str(k)) for k in kind)
    elif kind == "array":
        text = "array of " + _type(schema.get("items", {}))
    else:
        text = escape(str(kind))
    if "format" in schema:
        text += f" ({escape(str(schema['format']))})"
    if "enum" in schema:
        text += ": " + ", ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    return f"<code>{text}</code>" if "<" not in text else text


def _json(value: Any) -> str:
    return f"<pre>{escape(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"


def _text(text: str | None) -> str:
    return f'<p class="text">{escape(text)}</p>' if text else ""


def _anchor(method: str, path: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in path).strip("-")
    return f"op-{method}-{slug}"
