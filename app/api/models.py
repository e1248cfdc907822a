"""Routes: servable models (`GET /v1/models`, OpenAI's list shape) and their aliases.

Also the dependency the inference routes share: a model name resolved and loaded from the cache.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from sqlalchemy.orm import Session, sessionmaker

from app.api.auth import AUTH_RESPONSES, AdminKey, ReadKey
from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.inference_schemas import AliasIn, AliasList, AliasOut, ModelCard, ModelList
from app.api.schemas import problem_responses
from app.auth.principal import Principal
from app.errors import ServiceError
from app.inference import registry
from app.inference.registry import ALIAS_PATTERN, RESERVED_ALIASES, LoadedModel, ModelCache, ModelRef
from app.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["models"], responses=AUTH_RESPONSES)

AliasName = Annotated[str, Path(max_length=100, description=f"alias name, {ALIAS_PATTERN}")]
# A new alias's name: the pattern, and not a job or checkpoint id's prefix nor a reserved name.
NewAliasName = Annotated[
    str,
    Path(
        max_length=100,
        description=f"alias name, {ALIAS_PATTERN}, not starting with job_ or ckpt_, not aliases",
        json_schema_extra={
            "pattern": ALIAS_PATTERN,
            "not": {"anyOf": [{"pattern": "^(job_|ckpt_)"}, {"enum": sorted(RESERVED_ALIASES)}]},
        },
    ),
]


async def get_model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]


def serve_model(
    name: str, sessions: sessionmaker[Session], settings: Settings, cache: ModelCache, viewer: Principal
) -> tuple[ModelRef, LoadedModel]:
    """Resolve a model name `viewer` may use and load its checkpoint (404 unknown, 409 file missing or unusable).

    The database session lives only for the lookup: none is held while the model computes.
    """
    with sessions() as session:
        ref = registry.resolve(session, name, viewer)
    return ref, cache.get(ref)


@router.get("", response_model=ModelList)
def list_models(principal: ReadKey, session: SessionDep, settings: SettingsDep) -> ModelList:
    """This key's jobs that have a checkpoint (newest first), then every alias, each with the checkpoint it serves."""
    servable = registry.servable_models(session, principal)
    cards = [ModelCard.of(ref, aliases) for ref, aliases in servable]
    for alias in registry.list_aliases(session):
        try:
            ref = registry.resolve(session, alias.name)
        except ServiceError:  # its job has no checkpoint yet, or its target was deleted: not servable
            continue
        cards.append(ModelCard.of(ref, [alias.name]))
    return ModelList(data=cards)


@router.get("/aliases", response_model=AliasList)
def list_aliases(principal: ReadKey, session: SessionDep) -> AliasList:
    """All aliases and their targets."""
    return AliasList(data=[AliasOut.model_validate(a, from_attributes=True) for a in registry.list_aliases(session)])


@router.get("/aliases/{name}", response_model=AliasOut, responses=problem_responses(404))
def get_alias(name: AliasName, principal: ReadKey, session: SessionDep) -> AliasOut:
    """One alias."""
    return AliasOut.model_validate(registry.get_alias(session, name), from_attributes=True)


@router.put("/aliases/{name}", response_model=AliasOut, responses=problem_responses(404, 422))
def put_alias(name: NewAliasName, body: AliasIn, principal: AdminKey, engine: EngineDep) -> AliasOut:
    """Create an alias or point it elsewhere: the target is a job id (its best checkpoint) or a checkpoint id."""
    return AliasOut.model_validate(registry.set_alias(engine, name, body.target), from_attributes=True)


@router.delete("/aliases/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404))
def delete_alias(name: AliasName, principal: AdminKey, engine: EngineDep) -> Response:
    """Remove an alias (the model it named stays)."""
    registry.delete_alias(engine, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}", response_model=ModelCard, responses=problem_responses(404, 409))
def get_model(name: str, principal: ReadKey, session: SessionDep, settings: SettingsDep) -> ModelCard:
    """What a model name (job id, checkpoint id or alias) serves now; it is not loaded."""
    ref = registry.resolve(session, name, principal)
    aliases = [a.name for a in registry.list_aliases(session) if a.target in (ref.job_id, ref.checkpoint_id)]
    return ModelCard.of(ref, aliases)
