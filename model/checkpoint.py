"""Checkpoints: one `torch.save` file with weights, config, vocabulary and training state.

Only tensors, numbers, strings, lists and dicts are stored, so `torch.load(..., weights_only=True)`
reads it on any device without unpickling code. The format is documented in docs/checkpoint-format.md.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig
from model.data import Corpus, Vocabulary
from model.network import LSTMLanguageModel, resolve_device
from model.tokenizers import Tokenizer, TokenizerError, detect, legacy
from model.train import Trainer, TrainState, rank_seed, rng_state, set_rng_state

FORMAT = "lstm-lm-checkpoint/2"  # 2: the tokenizer travels with the model
READABLE_FORMATS = ("lstm-lm-checkpoint/1", FORMAT)


class CheckpointError(ValueError):
    """A file is not a readable checkpoint of this format."""


def trainer_payload(trainer: Trainer, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Everything needed to rebuild the model, continue training exactly where it stands, and read
    raw text as its training text was read: `tokenizer`, else the one the corpus folder records,
    else the word-level kind its vocabulary is in (`model.tokenizers.detect`: PTB's text -> ptb).
    """
    tokenizer = tokenizer or trainer.corpus.tokenizer or Tokenizer(detect(trainer.vocab.words))
    state = asdict(trainer.state)
    carried = trainer.checkpoint_carried()  # all B streams, whatever the world_size
    if carried is not None:  # stopped mid-epoch: keep the LSTM state flowing
        state["carried_h"], state["carried_c"] = (t.detach().cpu() for t in carried)
    ranks_rng = trainer.ranks_rng if trainer.distributed else None
    extra: dict[str, Any] = {} if ranks_rng is None else {"ranks_rng": ranks_rng}
    return {
        "format": FORMAT,
        "tokenizer": tokenizer.to_payload(),
        "config": trainer.config.to_dict(),
        "vocab": list(trainer.vocab.words),
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "train_state": state,
        "rng": rng_state() if ranks_rng is None else ranks_rng[0],
        **extra,  # a run on several processes: each rank's random state, in rank order
    }


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temporary file, then rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power loss only once its folder is flushed
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where the OS cannot
    open folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (`weights_only=True`); `CheckpointError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    return payload


def tokenizer_of(payload: dict[str, Any]) -> Tokenizer:
    """The tokenizer a checkpoint's model reads text with. Format-1 files name a text convention
    (`text_convention`: plain, ptb or wikitext) or, the oldest, nothing: then the vocabulary tells
    (`model.tokenizers.detect`), as it did when they were written."""
    stored = payload.get("tokenizer")
    if isinstance(stored, dict):
        try:
            return Tokenizer.from_payload(stored)
        except TokenizerError as exc:
            raise CheckpointError(f"unusable tokenizer in the checkpoint: {exc}") from None
    convention = payload.get("text_convention")
    found = legacy(convention if isinstance(convention, str) else None)
    return found if found is not None else Tokenizer(detect(payload.get("vocab") or ()))


def load_model(payload: dict[str, Any], device: str = "auto") -> tuple[LSTMLanguageModel, Vocabulary, ModelConfig]:
    """The model of a checkpoint, in eval mode on `device`, with its vocabulary and config."""
    config = ModelConfig.from_dict(payload["config"])
    vocab = Vocabulary(tuple(payload["vocab"]))
    model = LSTMLanguageModel(config, len(vocab))
    model.load_state_dict(payload["model"])
    return model.to(resolve_device(device)).eval(), vocab, config


def resume_trainer(
    payload: dict[str, Any], corpus: Corpus, device: str | None = None, rank: int = 0, world_size: int | None = None
) -> Trainer:
    """A trainer (rank `rank` of a run on several processes) that continues a checkpointed run; the
    corpus must give the same vocabulary.

    The file holds all B streams' carried state, so a run may resume with another `world_size`
    (one dividing batch_size): each rank takes its block. With the same world_size each rank gets
    its own random state back (`ranks_rng`) and the run continues exactly; with another, ranks past
    0 draw dropout masks from `rank_seed`, so only a run without dropout keeps the same numbers.
    """
    config = ModelConfig.from_dict(payload["config"])
    if device is not None:
        config = config.replace(device=device)
    if world_size is not None and world_size != config.world_size:
        config = config.replace(world_size=world_size)
    if list(corpus.vocab.words) != list(payload["vocab"]):
        raise CheckpointError("the corpus' vocabulary differs from the checkpoint's: resume on the same corpus")
    fields = dict(payload["train_state"])
    carried = (fields.pop("carried_h", None), fields.pop("carried_c", None))
    trainer = Trainer(config, corpus, TrainState(**fields), rank=rank)
    trainer.model.load_state_dict(payload["model"])
    if carried[0] is not None and carried[1] is not None:
        h, c = (t[:, trainer.rows] if trainer.distributed else t for t in carried)
        trainer.carried = (h.to(trainer.device), c.to(trainer.device))
        if trainer.distributed:
            trainer.gathered_carried = (carried[0], carried[1])
    ranks_rng = payload.get("ranks_rng")
    if isinstance(ranks_rng, list) and len(ranks_rng) == trainer.world_size:
        set_rng_state(ranks_rng[rank])
        trainer.ranks_rng = list(ranks_rng)
    else:
        set_rng_state(payload["rng"])
        if rank > 0:
            torch.manual_seed(rank_seed(config.seed, rank))
    return trainer
