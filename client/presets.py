"""`submit --help`: every config field `--set` may change, with its type and each preset's value,
read from the server's `/v1/presets` (the client speaks only HTTP: without a server, the help says where
the fields come from)."""

from __future__ import annotations

from typing import Any

import httpx
from typer.core import TyperCommand

from client.api import Api

HELP_TIMEOUT = httpx.Timeout(3.0, connect=2.0)


class SubmitCommand(TyperCommand):
    """A command whose help ends with the config fields and the presets' values."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        client = ctx.find_root().obj
        formatter.write("\n" + config_help(client if isinstance(client, Api) else None) + "\n")


def server_presets(client: Api) -> dict[str, Any] | None:
    try:
        response = client.http.get("/v1/presets", timeout=HELP_TIMEOUT)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "presets" in body and "fields" in body else None


def type_text(field: dict[str, Any]) -> str:
    kind = "|".join(field.get("choices") or []) if field["type"] == "choice" else field["type"]
    return f"{kind} or null" if field.get("nullable") else kind


def value_text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def config_help(client: Api | None) -> str:
    """The table of config fields: name, type, and the value in each preset."""
    body = server_presets(client) if client is not None else None
    if body is None or client is None:
        where = f" at {client.url}" if client is not None else ""
        return (
            f"Config fields: every field --set may change, with each preset's value, is listed here when the server"
            f"{where} answers (set --url or LSTMLM_URL); it did not."
        )
    source = f"the server at {client.url}"
    names = [p["name"] for p in body["presets"]]
    rows = [["field", "type", *names]]
    for field in body["fields"]:
        values = [value_text(p["config"].get(field["name"])) for p in body["presets"]]
        rows.append([field["name"], type_text(field), *values])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"Config fields for --set key=value, and each preset's values (from {source}):",
        "",
        *("  " + "  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)).rstrip() for row in rows),
    ]
    return "\n".join(lines)
