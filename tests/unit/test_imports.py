"""Import direction between the packages, read from the source with `ast` (nothing is imported):
`model/` uses only torch and the standard library and never the service (the tokenizers' text
libraries aside: imported inside the functions that cut raw text, never when the module loads);
`worker/` never imports the HTTP layer (`app.api`, `app.main`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imports_of(source: str, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in `source`, a module inside `package`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..y import z
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from app import main` imports app.main too
                yield node.lineno, f"{module}.{alias.name}"


def imported_modules(path: Path, top: str) -> Iterator[tuple[int, str]]:
    """Imports of a file under REPO/top; its package is its folder (or itself for __init__.py)."""
    package = [top, *path.relative_to(REPO / top).parent.parts]
    return imports_of(path.read_text(encoding="utf-8"), package)


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


TEXT_LIBRARIES = {"nltk", "sentencepiece"}  # what model/tokenizers.py may import on first use of a tokenizer


def deferred_lines(source: str) -> set[int]:
    """Lines of the imports inside a function body: they run on a call, not when the module loads."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    return lines


def test_model_imports_only_torch_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"torch", "model", "__future__"}
    files = sources("model")
    assert files, "model/ has no Python files"
    bad = []
    for path in files:
        deferred = deferred_lines(path.read_text(encoding="utf-8")) if path.name == "tokenizers.py" else set()
        for line, name in imported_modules(path, "model"):
            top = name.split(".")[0]
            if top not in allowed and not (top in TEXT_LIBRARIES and line in deferred):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert bad == []


def test_training_on_tokens_loads_no_text_library() -> None:
    # `python -m model train` on PTB-form text reads tokens: neither text library is loaded.
    code = (
        "import sys, model.cli, model.checkpoint, model.data, model.tokenizers;"
        f"print(sorted(m for m in {sorted(TEXT_LIBRARIES)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_model_does_not_import_the_service() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sources("model")
        for line, name in imported_modules(path, "model")
        if name.split(".")[0] in {"app", "worker"}
    ]
    assert bad == []


def test_worker_does_not_import_the_http_layer() -> None:
    files = sources("worker")
    if not files:
        pytest.skip("worker/ has no Python files yet")
    forbidden = ("app.api", "app.main")
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path, "worker")
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []


def test_the_checker_resolves_every_import_form() -> None:
    # The checks above only mean something if the parser sees each way of importing.
    source = (
        "import a.b as c\nfrom ..app import main\nfrom . import x\nfrom .y import z\ndef f():\n    import app.api\n"
    )
    names = {name for _, name in imports_of(source, ["worker", "sub"])}
    assert {"a.b", "worker.app", "worker.app.main", "worker.sub.x", "worker.sub.y.z", "app.api"} <= names
    real = {name for _, name in imported_modules(REPO / "model" / "checkpoint.py", "model")}
    assert {"torch", "model.config", "model.data.Corpus", "os", "tempfile"} <= real


def test_only_the_app_factory_imports_the_http_layer() -> None:
    # The core (store, training, inference, auth, scorings, observability), the dashboard and the
    # worker sit below the HTTP layer; only app/main.py puts the two together (and `python -m app run`,
    # app/cli.py, serves what it builds).
    forbidden = ("app.api", "app.main")
    entry = {REPO / "app" / "main.py", REPO / "app" / "cli.py"}
    files = [p for p in sources("app") if p.parent.name != "api" and p not in entry] + sources("worker")
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path, path.relative_to(REPO).parts[0])
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []


def test_the_client_speaks_only_http() -> None:
    files = sources("client")
    assert files, "client/ has no Python files"
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path, "client")
        if name.split(".")[0] in {"app", "model", "worker"}
    ]
    assert bad == []
