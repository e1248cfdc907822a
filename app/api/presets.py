"""Route: the experiment presets and the config fields a job may override (for forms and clients)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from model.config import PRESETS, ModelConfig

router = APIRouter(prefix="/v1/presets", tags=["jobs"])


class ConfigField(BaseModel):
    name: str
    type: Literal["integer", "number", "choice"]
    nullable: bool = Field(description="null is allowed (no cap)")
    choices: list[str] | None = Field(None, description="the allowed values of a choice field")


class PresetOut(BaseModel):
    name: str
    config: dict[str, Any] = Field(description="every config field with the preset's value")


class PresetList(BaseModel):
    presets: list[PresetOut]
    fields: list[ConfigField] = Field(description="the fields a job's `overrides` may set, in config order")


def _field(name: str, hint: Any) -> ConfigField:
    """Describe one config field from its type hint (int, float, a Literal of strings, or X | None)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = type(None) in typing.get_args(hint)
    base = args[0] if nullable and len(args) == 1 else hint
    if typing.get_origin(base) is Literal:
        return ConfigField(name=name, type="choice", nullable=nullable, choices=[str(c) for c in typing.get_args(base)])
    return ConfigField(name=name, type="integer" if base is int else "number", nullable=nullable)


@router.get("", response_model=PresetList)
def list_presets() -> PresetList:
    """The presets (small, medium, large, test) with their full configs, and the overridable fields."""
    hints = typing.get_type_hints(ModelConfig)
    return PresetList(
        presets=[PresetOut(name=name, config=config.to_dict()) for name, config in PRESETS.items()],
        fields=[_field(f.name, hints[f.name]) for f in dataclasses.fields(ModelConfig)],
    )
