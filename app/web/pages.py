"""Routes: the dashboard's pages (jobs, a job, compare, submit, scorings, playground, login), its
static files and icon, and a "not found" page for any other address a browser asks for.

Each route renders a page shell only; the page's script fetches its data from the JSON API.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

HERE = Path(__file__).resolve().parent
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
ICON = HERE / "static" / "favicon.svg"
# Paths of the API and its files: an unknown one there stays the API's problem+json 404.
NOT_PAGES = (
    "/v1/",
    "/static/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/tokenize",
    "/detokenize",
    "/tokenizer_info",
    "/models/",
    "/openapi.json",
    "/docs",
    "/redoc",
)


@lru_cache
def templates() -> Jinja2Templates:
    """The page templates, loaded on first use."""
    return Jinja2Templates(directory=HERE / "templates")


def page(request: Request, template: str, title: str, **context: object) -> HTMLResponse:
    """Render a page shell; `active` names the navigation entry to highlight."""
    return templates().TemplateResponse(request, template, {"title": title, **context})


@router.get("/")
def jobs_page(request: Request) -> HTMLResponse:
    """The jobs, newest first, updating live."""
    return page(request, "jobs.html", "Jobs", active="jobs")


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str) -> HTMLResponse:
    """One job: curves, progress, config, checkpoints, logs and actions."""
    return page(request, "job.html", f"Job {job_id}", active="jobs", job_id=job_id)


@router.get("/compare")
def compare_page(request: Request) -> HTMLResponse:
    """Validation perplexity of several jobs on one chart."""
    return page(request, "compare.html", "Compare", active="compare")


@router.get("/submit")
def submit_page(request: Request) -> HTMLResponse:
    """The job form and the corpus upload form."""
    return page(request, "submit.html", "Submit", active="submit")


@router.get("/scorings")
def scorings_page(request: Request) -> HTMLResponse:
    """Whole texts scored by the workers: the form and the list with live progress."""
    return page(request, "scorings.html", "Scorings", active="scorings")


@router.get("/playground")
def playground_page(request: Request) -> HTMLResponse:
    """Score sentences and generate text with a trained model."""
    return page(request, "playground.html", "Playground", active="playground")


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    """Ask for an API key once; the API keeps it in an HttpOnly cookie."""
    return page(request, "login.html", "Log in", active="login")


@router.get("/favicon.ico", response_class=FileResponse)
def favicon() -> FileResponse:
    """The icon, for browsers that ask for it where no page names it (a JSON answer opened in a tab)."""
    return FileResponse(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def wants_page(scope: Scope) -> bool:
    """A browser asking for a dashboard address: GET or HEAD of HTML, outside the API's paths."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return False
    if str(scope["path"]).startswith(NOT_PAGES):
        return False
    accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
    return "text/html" in accept


def not_found_page(fallback: ASGIApp) -> ASGIApp:
    """What answers a request no route matched: for a browser's page address, a page saying so (404)
    with links to the jobs; anything else goes to `fallback` (the API's problem+json 404)."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if not wants_page(scope):
            await fallback(scope, receive, send)
            return
        request = Request(scope, receive)
        response = page(request, "notfound.html", "Not found", active="", path=request.url.path)
        response.status_code = 404
        await response(scope, receive, send)

    return answer


def install(app: FastAPI) -> None:
    """Serve the pages at `/`, their static files at `/static` and a page for unknown addresses."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.router.default = not_found_page(app.router.default)
