"""model.train: the seed's loss scale, the SGD step with global-norm clipping, the per-epoch lr in the
optimiser, the LSTM state carried across batches and zeroed at each epoch, the callbacks (on_log
points, should_stop), and evaluation/test perplexity. Training steps are recomputed by hand on a copy
of the initial model and compared with what the Trainer did."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import ModelConfig
from model.data import Corpus, batches, epoch_size
from model.network import LSTMLanguageModel, State
from model.train import TEST_CHUNK, Callbacks, Diverged, EpochResult, EvalProgress, StepProgress, Trainer, perplexity


class StopAfter(Callbacks):
    """Stops training once `steps` training steps have run; records what the loop reported."""

    def __init__(self, steps: int | None = None, trainer: Trainer | None = None) -> None:
        self.steps = steps
        self.trainer = trainer
        self.progress: list[StepProgress] = []
        self.logged: list[StepProgress] = []
        self.epochs: list[EpochResult] = []
        self.evals: list[EvalProgress] = []
        self.lrs: list[float] = []  # the optimiser's lr at each step
        self.asked = 0

    def on_step(self, progress: StepProgress) -> None:
        self.progress.append(progress)
        if self.trainer is not None:
            self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])

    def on_log(self, progress: StepProgress) -> None:
        self.logged.append(progress)

    def on_eval_step(self, progress: EvalProgress) -> None:
        self.evals.append(progress)

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        self.epochs.append(result)

    def should_stop(self) -> bool:
        self.asked += 1
        return self.steps is not None and len(self.progress) >= self.steps


def seed_loss(model: LSTMLanguageModel, x: Tensor, y: Tensor, state: State) -> tuple[Tensor, State]:
    """The seed's cost written out: sum over the T time steps of the batch-mean cross entropy."""
    logits, state = model(x, state)
    loss = sum(F.cross_entropy(logits[:, t], y[:, t]) for t in range(x.size(1)))
    assert isinstance(loss, Tensor)
    return loss, state


def global_norm(tensors: list[Tensor]) -> float:
    """sqrt of the sum of squares of all elements, in float64."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors])).item()


def manual_sgd_step(model: LSTMLanguageModel, loss: Tensor, lr: float, max_norm: float) -> float:
    """Backward, clip by the global norm (as tf.clip_by_global_norm / clip_grad_norm_), p -= lr * g."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    norm = global_norm(list(grads))
    coef = min(1.0, max_norm / (norm + 1e-6))
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.sub_(g, alpha=lr * coef)
    return norm


def train_by_hand(
    model: LSTMLanguageModel, corpus: Corpus, config: ModelConfig, epochs: list[int], carry_across_epochs: bool = False
) -> LSTMLanguageModel:
    """Run `epochs[e]` steps in each epoch e, by hand; the state restarts at zero each epoch."""
    model = copy.deepcopy(model).train()
    state = model.zero_state(config.batch_size)
    for epoch, steps in enumerate(epochs):
        if not carry_across_epochs:
            state = model.zero_state(config.batch_size)
        stream: Iterator[tuple[Tensor, Tensor]] = batches(corpus.train, config.batch_size, config.num_steps)
        for _ in range(steps):
            x, y = next(stream)
            loss, state = seed_loss(model, x, y, state)
            manual_sgd_step(model, loss, config.lr_at(epoch), config.max_grad_norm)
            state = (state[0].detach(), state[1].detach())
    return model


def assert_same_params(a: LSTMLanguageModel, b: LSTMLanguageModel, atol: float = 1e-6) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=atol, msg=name)


def differs(a: LSTMLanguageModel, b: LSTMLanguageModel) -> bool:
    return any(not torch.allclose(pa, pb, atol=1e-6) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


# --- loss and update ---------------------------------------------------------------------------


def test_loss_is_sum_over_time_of_batch_mean_ce(corpus: Corpus, tiny_config: ModelConfig) -> None:
    trainer = Trainer(tiny_config, corpus)
    initial = copy.deepcopy(trainer.model)
    assert trainer.fit(StopAfter(1)) is False
    x, y = next(batches(corpus.train, tiny_config.batch_size, tiny_config.num_steps))
    with torch.no_grad():
        expected, _ = seed_loss(initial, x, y, initial.zero_state(tiny_config.batch_size))
        logits, _ = initial(x, initial.zero_state(tiny_config.batch_size))
        token_mean = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    assert trainer.state.epoch_costs == pytest.approx(expected.item(), rel=1e-6)
    # = mean token cross entropy x T: the scale lr 1.0 and max_grad_norm were tuned for
    assert trainer.state.epoch_costs == pytest.approx(token_mean.item() * tiny_config.num_steps, rel=1e-6)
    assert trainer.state.epoch_iters == tiny_config.num_steps
    # the running perplexity divides by the iterations (T per step), not by the steps
    assert perplexity(trainer.state.epoch_costs, trainer.state.epoch_iters) == pytest.approx(
        math.exp(token_mean.item()), rel=1e-6
    )


def test_sgd_update_is_param_minus_lr_times_grad(corpus: Corpus, tiny_config: ModelConfig) -> None:
    config = tiny_config.replace(max_grad_norm=1e6)  # no clipping: the plain SGD step
    trainer = Trainer(config, corpus)
    initial = copy.deepcopy(trainer.model)
    trainer.fit(StopAfter(1))
    x, y = next(batches(corpus.train, config.batch_size, config.num_steps))
    params = [p for p in initial.parameters() if p.requires_grad]
    loss, _ = seed_loss(initial, x, y, initial.zero_state(config.batch_size))
    grads = torch.autograd.grad(loss, params)
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    assert config.lr_at(0) == 1.0
    for p0, g, p1 in zip(params, grads, trained, strict=True):
        torch.testing.assert_close(p1, p0 - 1.0 * g, rtol=1e-5, atol=1e-7)
        assert not torch.equal(p1, p0)
    # b_hh is frozen at zero: TF trains a single bias per gate
    for k in range(config.num_layers):
        assert torch.count_nonzero(getattr(trainer.model.lstm, f"bias_hh_l{k}")) == 0


def test_gradients_clipped_to_max_grad_norm(corpus: Corpus, tiny_config: ModelConfig) -> None:
    max_norm = 0.01
    config = tiny_config.replace(max_grad_norm=max_norm, learning_rate=0.5)
    trainer = Trainer(config, corpus)
    initial = copy.deepcopy(trainer.model)
    trainer.fit(StopAfter(1))
    x, y = next(batches(corpus.train, config.batch_size, config.num_steps))
    loss, _ = seed_loss(initial, x, y, initial.zero_state(config.batch_size))
    grads = torch.autograd.grad(loss, [p for p in initial.parameters() if p.requires_grad])
    raw_norm = global_norm(list(grads))
    assert raw_norm > 10 * max_norm  # the case really clips
    # the applied step, divided by lr, is the clipped gradient: its global norm is max_grad_norm
    deltas = [
        (p0 - p1) / 0.5
        for p0, p1 in zip(initial.parameters(), trainer.model.parameters(), strict=True)
        if p0.requires_grad
    ]
    clipped_norm = global_norm(deltas)
    assert clipped_norm == pytest.approx(max_norm, rel=1e-3)
    assert_same_params(trainer.model, train_by_hand(initial, corpus, config, [1]), atol=1e-7)


def test_lr_schedule_reaches_the_optimizer(corpus: Corpus, tiny_config: ModelConfig) -> None:
    config = tiny_config.replace(max_epoch=1, max_max_epoch=3, lr_decay=0.5, max_steps_per_epoch=2)
    trainer = Trainer(config, corpus)
    cb = StopAfter(trainer=trainer)
    assert trainer.fit(cb) is True
    assert cb.lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert [p.lr for p in cb.progress] == cb.lrs
    assert [h["lr"] for h in trainer.state.history] == [1.0, 0.5, 0.25]
    # and the steps really used it: the same three epochs by hand, with lr_at(epoch)
    initial = Trainer(config, corpus).model
    assert_same_params(trainer.model, train_by_hand(initial, corpus, config, [2, 2, 2]))


# --- the LSTM state ----------------------------------------------------------------------------


def test_state_carried_across_batches(corpus: Corpus, tiny_config: ModelConfig) -> None:
    trainer = Trainer(tiny_config, corpus)
    initial = copy.deepcopy(trainer.model)
    trainer.fit(StopAfter(2))
    assert trainer.state.step == 2
    assert_same_params(trainer.model, train_by_hand(initial, corpus, tiny_config, [2]))
    # The check can fail: restarting the second step from zero gives other weights.
    restarted = copy.deepcopy(initial)
    stream = batches(corpus.train, tiny_config.batch_size, tiny_config.num_steps)
    for x, y in (next(stream), next(stream)):
        loss, _ = seed_loss(restarted, x, y, restarted.zero_state(tiny_config.batch_size))
        manual_sgd_step(restarted, loss, 1.0, tiny_config.max_grad_norm)
    assert differs(trainer.model, restarted)


def test_state_reset_at_epoch_start(corpus: Corpus, tiny_config: ModelConfig) -> None:
    config = tiny_config.replace(max_epoch=2, max_max_epoch=2, max_steps_per_epoch=2)
    trainer = Trainer(config, corpus)
    initial = copy.deepcopy(trainer.model)
    assert trainer.fit() is True
    # each epoch restarts the stream at step 0 from a zero state
    assert_same_params(trainer.model, train_by_hand(initial, corpus, config, [2, 2]))
    assert differs(trainer.model, train_by_hand(initial, corpus, config, [2, 2], carry_across_epochs=True))


def test_stop_then_continue_equals_uninterrupted(corpus: Corpus, tiny_config: ModelConfig) -> None:
    config = tiny_config.replace(max_max_epoch=2, max_steps_per_epoch=5)
    straight = Trainer(config, corpus)
    straight.fit()
    stopped = Trainer(config, corpus)
    assert stopped.fit(StopAfter(3)) is False
    assert stopped.carried is not None
    assert stopped.fit() is True  # continues at step 3 with the carried state
    assert_same_params(stopped.model, straight.model, atol=0)
    assert stopped.state.test_ppl == straight.state.test_ppl


# --- callbacks ---------------------------------------------------------------------------------


def test_on_log_at_the_seeds_points(corpus: Corpus) -> None:
    steps = 120  # the seed logs when step % (epoch_size // 10) == 10, step 0-based: 10, 22, ..., 118
    config = ModelConfig(
        hidden_size=4, num_layers=1, num_steps=2, batch_size=2, max_max_epoch=1, max_steps_per_epoch=steps
    )
    cb = StopAfter()
    Trainer(config, corpus).fit(cb)
    expected = [s + 1 for s in range(steps) if s % (steps // 10) == 10]  # 1-based steps done
    assert expected == list(range(11, 121, 12))
    assert [p.step for p in cb.logged] == expected
    assert [p.step for p in cb.progress] == list(range(1, steps + 1))
    assert all(p.steps == steps and p.epoch == 1 for p in cb.progress)
    assert cb.logged[-1].fraction == pytest.approx(119 / 120)
    assert len(cb.epochs) == 1


def test_validation_and_test_passes_report_their_progress(corpus: Corpus, tiny_config: ModelConfig) -> None:
    config = tiny_config.replace(max_max_epoch=2, max_steps_per_epoch=4)
    cb = StopAfter()
    trainer = Trainer(config, corpus)
    assert trainer.fit(cb) is True
    valid_steps = epoch_size(corpus.valid.numel(), config.batch_size, config.num_steps)
    test_steps = math.ceil((corpus.test.numel() - 1) / TEST_CHUNK)
    validate = [(p.step, p.steps) for p in cb.evals if p.phase == "validate"]
    test = [(p.step, p.steps) for p in cb.evals if p.phase == "test"]
    # every batch of both validation passes, then every chunk of the one test run, in order
    assert validate == [(i, valid_steps) for i in range(1, valid_steps + 1)] * 2
    assert test == [(i, test_steps) for i in range(1, test_steps + 1)]
    assert [p.phase for p in cb.evals] == ["validate"] * 2 * valid_steps + ["test"] * test_steps
    assert cb.evals[-1].fraction == 1.0 and 0 < cb.evals[0].fraction < 1
    # the hook sees counts only: the numbers equal a run without callbacks, bit for bit
    plain = Trainer(config, corpus)
    assert plain.fit() is True
    numbers = [(h["train_ppl"], h["valid_ppl"], h["lr"]) for h in trainer.state.history]
    assert numbers == [(h["train_ppl"], h["valid_ppl"], h["lr"]) for h in plain.state.history]
    assert plain.state.test_ppl == trainer.state.test_ppl
    chunked = [p.step for p in _evals(trainer, corpus, chunk=7)]
    assert chunked == list(range(1, math.ceil((corpus.test.numel() - 1) / 7) + 1))


def _evals(trainer: Trainer, corpus: Corpus, chunk: int) -> list[EvalProgress]:
    cb = StopAfter()
    trainer.test_perplexity(corpus.test, chunk=chunk, callbacks=cb)
    return cb.evals


def test_should_stop_stops_at_a_step_boundary(corpus: Corpus, tiny_config: ModelConfig) -> None:
    trainer = Trainer(tiny_config, corpus)
    cb = StopAfter(3)
    assert trainer.fit(cb) is False
    assert len(cb.progress) == 3
    assert cb.asked == 4  # asked before each step; the fourth answer stopped it
    s = trainer.state
    assert (s.epoch, s.step, s.epoch_iters) == (0, 3, 3 * tiny_config.num_steps)
    assert s.history == [] and s.test_ppl is None and not trainer.finished
    assert cb.epochs == []


def test_fit_records_history_best_and_test(corpus: Corpus, tiny_config: ModelConfig) -> None:
    config = tiny_config.replace(max_max_epoch=3, max_steps_per_epoch=10)
    trainer = Trainer(config, corpus)
    cb = StopAfter()
    assert trainer.fit(cb) is True and trainer.finished
    history = trainer.state.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "lr", "train_ppl", "valid_ppl", "wps", "seconds"}
    assert trainer.state.best_valid_ppl == min(h["valid_ppl"] for h in history)
    assert [r.valid_ppl for r in cb.epochs] == [h["valid_ppl"] for h in history]
    assert trainer.state.test_ppl == pytest.approx(trainer.test_perplexity(corpus.test))
    assert (trainer.state.epoch, trainer.state.step) == (3, 0)
    assert trainer.train_steps == 10


def test_same_seed_same_initial_weights(corpus: Corpus, tiny_config: ModelConfig) -> None:
    a, b = Trainer(tiny_config, corpus).model, Trainer(tiny_config, corpus).model
    c = Trainer(tiny_config.replace(seed=1), corpus).model
    assert_same_params(a, b, atol=0)
    assert differs(a, c)


# --- evaluation --------------------------------------------------------------------------------


def test_evaluate_carries_state_without_dropout(corpus: Corpus, tiny_config: ModelConfig) -> None:
    trainer = Trainer(tiny_config.replace(keep_prob=0.5, init_scale=0.5), corpus)
    model = trainer.model
    b, t = 4, 3
    got = trainer.evaluate(corpus.valid, b, t)
    assert trainer.evaluate(corpus.valid, b, t) == got  # no dropout: repeatable
    model.eval()
    total, count, state = 0.0, 0, model.zero_state(b)
    total_fresh = 0.0
    with torch.no_grad():
        for x, y in batches(corpus.valid, b, t):
            logits, state_next = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
            fresh, _ = model(x, model.zero_state(b))
            total_fresh += F.cross_entropy(fresh.reshape(-1, fresh.size(-1)), y.reshape(-1), reduction="sum").item()
            count += y.numel()
            state = state_next
    assert got == pytest.approx(math.exp(total / count), rel=1e-6)
    assert got != pytest.approx(math.exp(total_fresh / count), rel=1e-6)


def test_test_perplexity_independent_of_chunk(corpus: Corpus, tiny_config: ModelConfig) -> None:
    trainer = Trainer(tiny_config.replace(keep_prob=0.5, init_scale=0.5), corpus)
    ids = corpus.test
    one = trainer.test_perplexity(ids, chunk=1)
    assert one == pytest.approx(trainer.test_perplexity(ids, chunk=1024), rel=1e-6)
    assert one == pytest.approx(trainer.test_perplexity(ids, chunk=7), rel=1e-6)
    assert one == pytest.approx(trainer.evaluate(ids, 1, 1), rel=1e-6)
    # every one of the N - 1 next-token predictions is scored, in one stream from a zero state
    model = trainer.model.eval()
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(0), model.zero_state(1))
        nll = F.cross_entropy(logits[0], ids[1:], reduction="sum").item()
    assert one == pytest.approx(math.exp(nll / (ids.numel() - 1)), rel=1e-6)


def test_perplexity_helper() -> None:
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(50), 10) == pytest.approx(50)
    assert perplexity(1e6, 1) == math.inf


def test_a_run_whose_loss_stops_being_finite_raises_diverged_before_recording_it(
    corpus: Corpus, tiny_config: ModelConfig
) -> None:
    config = tiny_config.replace(
        learning_rate=100.0, init_scale=10.0, max_grad_norm=1e6, hidden_size=200, num_layers=1, max_max_epoch=3
    )
    trainer = Trainer(config, corpus)
    with pytest.raises(Diverged, match=r"^diverged at epoch 1 step \d+") as raised:
        trainer.fit()
    assert raised.value.epoch == 1
    assert trainer.state.history == [] and trainer.state.test_ppl is None  # nothing non-finite recorded
