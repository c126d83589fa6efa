"""The dialect schemas in /openapi.json, and /docs served from assets shipped with edge-ai (no CDN).

Routes read their bodies themselves (one validation, by the dialect schema); `body_of` tells FastAPI what
that schema is so the published document describes the real wire format."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse

_MODELS: dict[str, type[BaseModel]] = {}
_PATHS: dict[str, dict[str, Any]] = {}  # routes FastAPI does not describe itself (plain Starlette routes)


def _name(model: type[BaseModel]) -> str:
    dialect = model.__module__.rsplit(".", 1)[-1]
    return {"openai": "OpenAI", "anthropic": "Anthropic"}.get(dialect, dialect) + "_"


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    name = _name(model) + model.__name__
    _MODELS[name] = model
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document(path: str, method: str, tag: str, summary: str, model: type[BaseModel] | None) -> None:
    """Describe a plain route in /openapi.json as FastAPI would an APIRoute."""
    op: dict[str, Any] = {"tags": [tag], "summary": summary, "operationId": summary.lower().replace(" ", "_"),
                          "responses": {"200": {"description": "The answer (JSON, or an SSE stream when `stream` is set)"},
                                        "400": {"description": "Invalid request, in the dialect's error envelope"},
                                        "401": {"description": "No valid API key (keys configured)"},
                                        "429": {"description": "Over capacity or this key's limit; see Retry-After"}}}
    if model is not None:
        op.update(body_of(model))
    _PATHS.setdefault(path, {})[method.lower()] = op


def install(app: FastAPI) -> None:
    """Publish the bodies' schemas as components, and serve /docs offline."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc["paths"] = {**_PATHS, **doc.get("paths", {})}
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, model in _MODELS.items():
                prefix = name[: name.index("_") + 1]
                schema = model.model_json_schema(ref_template=f"#/components/schemas/{prefix}{{model}}")
                for sub, sub_schema in schema.pop("$defs", {}).items():
                    components[prefix + sub] = sub_schema
                components[name] = schema
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    assets = _swagger_assets()
    if assets is None:
        return
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)


def _swagger_assets() -> str | None:
    """Swagger UI's files from the swagger-ui-bundle package: the browser needs no internet."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)
