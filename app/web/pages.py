"""Routes: the dashboard's pages (jobs, a job, compare, submit, scorings, playground, login) and its static files.

Each route renders a page shell only; the page's script fetches its data from the JSON API.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


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


def install(app: FastAPI) -> None:
    """Serve the pages at `/` and their static files at `/static`."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
