"""Training in the seed's way: SGD on the summed-over-time loss, global-norm clipping, a per-epoch
learning-rate schedule and truncated back-propagation with the state carried between batches.

`Trainer.fit` is one flat loop. Everything a caller wants to see (progress, epoch results) goes
through `Callbacks`; `Callbacks.should_stop` is asked between steps, and a stopped trainer can be
checkpointed mid-epoch and resumed to the same numbers.

With `world_size` N > 1 the same loop runs in N processes at once (`model.distributed` starts them
and their `torch.distributed` group): rank r trains streams [r*B/N, (r+1)*B/N) of every batch with
its own carried state, the losses are divided by the whole B, and one all-reduce sums the gradients
(and the step's cost), so every rank clips by the norm of the whole gradient and takes the step of
one process. Rank 0's `should_stop` is broadcast before every step; validation is split the same
way and reduced; the test run (one stream) is rank 0's alone. At a stop and at each epoch's end
rank 0 gathers the ranks' carried states and random states, so its checkpoints hold the whole run.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from model.config import ModelConfig
from model.data import Corpus, CorpusError, Vocabulary, batches, epoch_size
from model.loss import summed_cross_entropy
from model.network import (
    LSTMLanguageModel,
    State,
    autocast,
    check_precision,
    detach,
    resolve_device,
    set_matmul_precision,
)

TEST_CHUNK = 1024  # the B=1, T=1 test stream fed this many tokens at a time: same numbers, faster


@dataclass(frozen=True)
class StepProgress:
    """Where training stands after one step; `epoch` is 1-based, `fraction` of this epoch done."""

    epoch: int
    step: int  # steps done in this epoch
    steps: int  # steps in this epoch
    lr: float
    ppl: float  # running training perplexity of this epoch
    wps: float  # words per second this epoch

    @property
    def fraction(self) -> float:
        return self.step / self.steps


@dataclass(frozen=True)
class EvalProgress:
    """Where an evaluation pass stands: `phase` is "validate" (after an epoch) or "test" (the final run)."""

    phase: str
    step: int  # batches (validate) or chunks (test) done
    steps: int  # batches or chunks in the pass

    @property
    def fraction(self) -> float:
        return self.step / self.steps


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    lr: float
    train_ppl: float
    valid_ppl: float
    wps: float
    seconds: float


@dataclass
class TrainState:
    """Everything besides the weights that a resumed run needs to continue identically."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps inside epoch `epoch` (0 at a boundary)
    best_valid_ppl: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # one EpochResult per epoch
    test_ppl: float | None = None
    # Mid-epoch only: the running cost sum and word count, and the carried LSTM state.
    epoch_costs: float = 0.0
    epoch_iters: int = 0
    epoch_seconds: float = 0.0


class Diverged(RuntimeError):
    """The loss became infinite or NaN: more steps cannot bring the run back."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"diverged at epoch {epoch} step {step}: the loss is not finite (lower the learning_rate)")
        self.epoch, self.step = epoch, step


class Callbacks:
    """Hooks the training loop calls; subclass and override what you need."""

    def on_step(self, progress: StepProgress) -> None:
        """After every training step."""

    def on_log(self, progress: StepProgress) -> None:
        """At the seed's ten progress points per epoch."""

    def on_eval_step(self, progress: EvalProgress) -> None:
        """After every batch of a validation pass and every chunk of the test run."""

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        """After an epoch's validation; `trainer.checkpoint()` is consistent here."""

    def should_stop(self) -> bool:
        """Asked between steps; True stops training at this step boundary."""
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state_to_list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_python_state_from_list(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_list(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_list(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return version, tuple(internal), gauss


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random stream (dropout masks) after the shared initialisation:
    rank 0 keeps `seed`'s stream, every other rank draws masks of its own."""
    return (seed + rank * 0x9E3779B97F4A7C15) % 2**64


def perplexity(total_nll: float, count: int) -> float:
    """exp(mean cross entropy); `inf` instead of an overflow."""
    mean = total_nll / max(count, 1)
    return math.exp(mean) if mean < 700 else math.inf


class Trainer:
    """Owns the model and optimiser of one run; `fit()` trains it to `max_max_epoch` epochs."""

    def __init__(self, config: ModelConfig, corpus: Corpus, state: TrainState | None = None, rank: int = 0) -> None:
        self.config = config
        self.corpus = corpus
        self.vocab: Vocabulary = corpus.vocab
        self.rank, self.world_size = rank, config.world_size
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside world_size {self.world_size}")
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", rank)  # one GPU per rank
        check_precision(self.device, config.precision)
        set_matmul_precision(self.device, config.precision)
        seed_everything(config.seed)
        # Built on the CPU, then moved: the same seed gives the same weights on every device.
        self.model = LSTMLanguageModel(config, len(self.vocab)).to(self.device)
        if rank > 0:  # the same weights on every rank; dropout masks of its own
            torch.manual_seed(rank_seed(config.seed, rank))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=config.learning_rate)
        self.state = state or TrainState()
        # Fail now, not after an epoch of training, when a split is too short for the batch layout.
        for split, ids in (("train", corpus.train), ("valid", corpus.valid)):
            if epoch_size(ids.numel(), config.batch_size, config.num_steps) < 1:
                raise CorpusError(
                    f"the {split} split has {ids.numel()} tokens, too few for batch_size={config.batch_size} "
                    f"and num_steps={config.num_steps}: need at least {config.batch_size * (config.num_steps + 1)}"
                )
        if corpus.test.numel() < 2:
            raise CorpusError("the test split needs at least 2 tokens")
        self.carried: State | None = None  # the LSTM state across a mid-epoch stop (this rank's streams)
        # This rank's block of the B streams, and (world_size > 1, rank 0) what the checkpoints hold:
        # every rank's carried state joined into [L, B, H] and every rank's random state.
        self.local_batch = config.batch_size // self.world_size
        self.rows = slice(rank * self.local_batch, (rank + 1) * self.local_batch)
        self.gathered_carried: State | None = None
        self.ranks_rng: list[dict[str, Any]] | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def checkpoint_carried(self) -> State | None:
        """The carried state of all B streams, as one process would hold it (None at a boundary)."""
        if self.carried is None:
            return None
        return self.gathered_carried if self.distributed else self.carried

    @property
    def train_steps(self) -> int:
        """Steps per training epoch, after the optional cap."""
        c = self.config
        steps = epoch_size(self.corpus.train.numel(), c.batch_size, c.num_steps)
        return min(steps, c.max_steps_per_epoch) if c.max_steps_per_epoch else steps

    def eval_stream(self, ids: Tensor) -> Tensor:
        """A validation or test stream as evaluated: its first `max_eval_tokens` tokens, if capped."""
        cap = self.config.max_eval_tokens
        return ids[:cap] if cap is not None else ids

    @property
    def finished(self) -> bool:
        return self.state.test_ppl is not None

    def fit(self, callbacks: Callbacks | None = None) -> bool:
        """Train the remaining epochs, then score the test set. Returns False if stopped early."""
        cb = callbacks or Callbacks()
        c = self.config
        if self.distributed and not (dist.is_initialized() and dist.get_world_size() == self.world_size):
            raise RuntimeError(
                f"world_size {self.world_size}: train inside `model.distributed.Ranks` (rank 0) or as one of its ranks"
            )
        while self.state.epoch < c.max_max_epoch:
            if not self._train_epoch(cb):
                return False
            # --- evaluate and record the epoch ---
            valid_ppl = self.evaluate(self.eval_stream(self.corpus.valid), c.batch_size, c.num_steps, callbacks=cb)
            if self.distributed:
                self.ranks_rng = _gather_objects(rng_state())
            s = self.state
            if not math.isfinite(valid_ppl):  # NaN weights, or a loss past exp(700)
                raise Diverged(s.epoch + 1, s.step)
            result = EpochResult(
                epoch=s.epoch + 1,
                lr=c.lr_at(s.epoch),
                train_ppl=perplexity(s.epoch_costs, s.epoch_iters),
                valid_ppl=valid_ppl,
                wps=s.epoch_iters * c.batch_size / max(s.epoch_seconds, 1e-9),
                seconds=s.epoch_seconds,
            )
            s.history.append(asdict(result))
            if s.best_valid_ppl is None or valid_ppl < s.best_valid_ppl:
                s.best_valid_ppl = valid_ppl
            s.epoch, s.step = s.epoch + 1, 0
            s.epoch_costs, s.epoch_iters, s.epoch_seconds = 0.0, 0, 0.0
            self.carried = self.gathered_carried = None
            cb.on_epoch(result, self)
        if self.rank > 0:  # the test run is one stream: rank 0's alone
            return True
        if self.state.test_ppl is None:
            test_ppl = self.test_perplexity(self.eval_stream(self.corpus.test), callbacks=cb)
            if not math.isfinite(test_ppl):
                raise Diverged(self.state.epoch, self.train_steps)
            self.state.test_ppl = test_ppl
        return True

    def _train_epoch(self, cb: Callbacks) -> bool:
        """Train (the rest of) epoch `state.epoch`; False when `cb.should_stop()` interrupted it."""
        c, s, model = self.config, self.state, self.model
        lr = c.lr_at(s.epoch)
        for group in self.optimizer.param_groups:  # the schedule lives in the optimiser
            group["lr"] = lr
        steps = self.train_steps
        log_every = max(steps // 10, 1)
        model.train()
        state = self.carried if self.carried is not None else model.zero_state(self.local_batch)
        started = time.perf_counter() - s.epoch_seconds
        rows = self.rows if self.distributed else None
        for x, y in batches(self.corpus.train, c.batch_size, c.num_steps, start=s.step, rows=rows):
            if s.step >= steps:
                break
            stop = cb.should_stop()
            if self.distributed:
                stop = _broadcast_flag(stop, self.device)  # rank 0's answer, for every rank
            if stop:
                self.carried = state
                if self.distributed:
                    self.gathered_carried = _gather_rows(state)
                    self.ranks_rng = _gather_objects(rng_state())
                s.epoch_seconds = time.perf_counter() - started
                return False
            # --- forward: loss = sum over T of the batch-mean cross entropy (the seed's scale) ---
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast(self.device, c.precision):
                logits, state = model(x, state)  # [B, T, V] (this rank's B / world_size streams)
            # divided by the whole batch on every rank: the ranks' gradients add up to one process' gradient
            loss = summed_cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), c.batch_size)
            self.optimizer.zero_grad(set_to_none=True)
            if self.distributed:
                loss.backward()
                cost = _all_reduce_gradients(self.params, loss.detach())  # the whole batch's cost
                if not math.isfinite(cost):  # every rank sees the same sum: all stop before the step
                    raise Diverged(s.epoch + 1, s.step + 1)
            else:
                cost = loss.item()
                if not math.isfinite(cost):  # stop before the step writes inf/NaN into the weights
                    raise Diverged(s.epoch + 1, s.step + 1)
                loss.backward()
            # --- clip by global norm (of the whole gradient), SGD step ---
            torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
            self.optimizer.step()
            state = detach(state)
            # --- bookkeeping ---
            s.epoch_costs += cost
            s.epoch_iters += c.num_steps
            s.step += 1
            s.epoch_seconds = time.perf_counter() - started
            progress = StepProgress(
                epoch=s.epoch + 1,
                step=s.step,
                steps=steps,
                lr=lr,
                ppl=perplexity(s.epoch_costs, s.epoch_iters),
                wps=s.epoch_iters * c.batch_size / max(s.epoch_seconds, 1e-9),
            )
            cb.on_step(progress)
            if (s.step - 1) % log_every == 10 % log_every:  # the seed's `step % (size // 10) == 10`
                cb.on_log(progress)
        return True

    @torch.no_grad()
    def evaluate(self, ids: Tensor, batch_size: int, num_steps: int, callbacks: Callbacks | None = None) -> float:
        """Perplexity of a stream with the seed's batch layout, state carried, nothing dropped.

        `callbacks.on_eval_step` hears of every batch (phase "validate"); it sees counts only, so
        the numbers are the same with or without it.
        """
        model = self.model
        model.eval()
        # Several ranks split the streams as in training (when they divide evenly) and add their sums.
        split = self.distributed and batch_size % self.world_size == 0
        rows = slice(self.rank * batch_size // self.world_size, (self.rank + 1) * batch_size // self.world_size)
        state = model.zero_state(rows.stop - rows.start if split else batch_size)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        count = 0
        steps = epoch_size(ids.numel(), batch_size, num_steps)
        for i, (x, y) in enumerate(batches(ids, batch_size, num_steps, rows=rows if split else None), start=1):
            with autocast(self.device, self.config.precision):
                logits, state = model(x.to(self.device), state)
            total += summed_cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1).to(self.device))
            count += y.numel()
            if callbacks is not None:
                callbacks.on_eval_step(EvalProgress("validate", i, steps))
        if split:
            sums = torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=self.device)])
            dist.all_reduce(sums)
            total, count = sums[0], int(sums[1].item())
        return perplexity(total.item(), count)

    @torch.no_grad()
    def test_perplexity(self, ids: Tensor, chunk: int = TEST_CHUNK, callbacks: Callbacks | None = None) -> float:
        """The seed's test run (B = 1, T = 1 over the whole stream), fed `chunk` tokens at a time.

        With B = 1 nothing is dropped and the state flows on, so the chunk length changes only the
        speed: all N - 1 next-token predictions are scored, as with T = 1. `callbacks.on_eval_step`
        hears of every chunk (phase "test").
        """
        model = self.model
        model.eval()
        state = model.zero_state(1)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        stream = ids.to(self.device)
        steps = math.ceil((stream.numel() - 1) / chunk)
        for i, start in enumerate(range(0, stream.numel() - 1, chunk), start=1):
            x = stream[start : start + chunk].unsqueeze(0)  # [1, t]
            y = stream[start + 1 : start + chunk + 1]
            x = x[:, : y.numel()]
            with autocast(self.device, self.config.precision):
                logits, state = model(x, state)
            total += summed_cross_entropy(logits.view(-1, logits.size(-1)), y)
            if callbacks is not None:
                callbacks.on_eval_step(EvalProgress("test", i, steps))
        return perplexity(total.item(), stream.numel() - 1)


# --- the collectives of a run on several processes (the default torch.distributed group) ---


def _broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _all_reduce_gradients(params: list[torch.nn.Parameter], loss: Tensor) -> float:
    """Sum every parameter's gradient and the loss across the ranks in one all-reduce (one flat
    buffer); returns the summed loss."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g)
        offset += n
    return float(flat[-1].item())


def _gather_rows(state: State) -> State:
    """Every rank's carried (h, c), [L, B / world_size, H] each, joined along the batch into [L, B, H]."""
    joined = []
    for part in state:
        parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, part.contiguous())
        joined.append(torch.cat(parts, dim=1))
    return joined[0], joined[1]


def _gather_objects(value: Any) -> list[Any]:
    """Every rank's `value` (small, picklable), in rank order, on every rank."""
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
