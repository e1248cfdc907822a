"""`submit --help`: every config field `--set` may change, with its type and each preset's value,
read from the server's `/v1/presets` when it answers, else from the presets installed with the client."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

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


def local_presets() -> dict[str, Any] | None:
    """The same shape as `/v1/presets`, from the `model` package installed with the client."""
    try:
        from model.config import PRESETS, ModelConfig
    except ImportError:
        return None
    hints = typing.get_type_hints(ModelConfig)
    fields = []
    for field in dataclasses.fields(ModelConfig):
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = type(None) in typing.get_args(hint)
        base = args[0] if nullable and len(args) == 1 else hint
        if typing.get_origin(base) is Literal:
            choices = [str(c) for c in typing.get_args(base)]
            fields.append({"name": field.name, "type": "choice", "nullable": nullable, "choices": choices})
        else:
            kind = "integer" if base is int else "number"
            fields.append({"name": field.name, "type": kind, "nullable": nullable, "choices": None})
    presets = [{"name": name, "config": config.to_dict()} for name, config in PRESETS.items()]
    return {"presets": presets, "fields": fields}


def type_text(field: dict[str, Any]) -> str:
    kind = "|".join(field.get("choices") or []) if field["type"] == "choice" else field["type"]
    return f"{kind} or null" if field.get("nullable") else kind


def value_text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def config_help(client: Api | None) -> str:
    """The table of config fields: name, type, and the value in each preset."""
    body = server_presets(client) if client is not None else None
    source = f"the server at {client.url}" if body is not None and client is not None else ""
    if body is None:
        body = local_presets()
        source = "the presets installed with this client (the server did not answer)"
    if body is None:
        return "Config fields: ask the server (GET /v1/presets); it did not answer."
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
