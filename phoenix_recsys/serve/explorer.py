"""The feed explorer page at `/ui`: static files (no build step) over the JSON API.

The page calls the same public endpoints as any client (`POST /v1/feed`, `/v1/events`,
`PUT /v1/users/{u}/blocks/{a}`), sending the key the user pastes as `Authorization: Bearer <key>`,
so it needs no privileged route and shows exactly what the API returns.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

#: The page's files, shipped as package data (pyproject's package-data includes html/js/css).
UI_DIR = Path(__file__).with_name("ui")
UI_PATH = "/ui"


def mount_explorer(app: FastAPI) -> None:
    """Serve `serve/ui/` at `/ui/` (index.html by default); `/ui` redirects there.

    The redirect keeps the page's relative URLs (app.js, style.css) resolving under `/ui/`.
    """
    if not (UI_DIR / "index.html").is_file():  # a broken install: say so instead of serving 404s
        raise FileNotFoundError(f"feed explorer files missing: {UI_DIR / 'index.html'}")

    @app.get(UI_PATH, include_in_schema=False)
    def _ui_redirect() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/")

    app.mount(UI_PATH, StaticFiles(directory=UI_DIR, html=True), name="ui")
