"""Training precision: bf16 trains to the fp32 run's perplexities (within 1%), fp32 stays
bit-identical to the recorded PTB run, and tf32 is refused where there is no CUDA device (on a GPU,
tf32 and bf16 train within 1% of fp32). bf16 tests are skipped on CPUs without bf16 support."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model.checkpoint import trainer_payload
from model.config import ConfigError, ModelConfig, preset
from model.data import Corpus, batches
from model.network import (
    LSTMLanguageModel,
    PrecisionError,
    set_matmul_precision,
    supported_precisions,
    supports_precision,
)
from model.train import Callbacks, StepProgress, Trainer, seed_everything

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(
    not supports_precision(CPU, "bf16"), reason="this CPU has no bf16 support (AVX512-BF16 or AMX)"
)
REPO = Path(__file__).resolve().parents[2]
PTB_DIR = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
PTB_LOG = REPO / "docs" / "results" / "logs" / "ptb-small-cpu.log"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Recorded numbers were made with one thread; a product split over threads may round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def short_run(corpus: Corpus, precision: str, device: str = "cpu") -> list[float]:
    """Train, validation and test perplexities of a 3-epoch run on the tiny corpus."""
    config = preset(
        "test",
        hidden_size=32,
        num_layers=2,
        num_steps=5,
        batch_size=4,
        max_epoch=2,
        max_max_epoch=3,
        device=device,
        precision=precision,
    )
    trainer = Trainer(config, corpus)
    trainer.fit()
    history = trainer.state.history
    assert trainer.state.test_ppl is not None
    return [h["train_ppl"] for h in history] + [h["valid_ppl"] for h in history] + [trainer.state.test_ppl]


@needs_bf16
def test_bf16_run_is_within_one_percent_of_fp32(corpus: Corpus, one_thread: None) -> None:
    fp32 = short_run(corpus, "fp32")
    bf16 = short_run(corpus, "bf16")
    assert fp32[2] < fp32[1] < fp32[0] and bf16[2] < bf16[1] < bf16[0]  # both really trained
    assert bf16 != fp32  # bf16 really ran: its rounding moves the numbers
    for low, full in zip(bf16, fp32, strict=True):
        assert low == pytest.approx(full, rel=0.01)


@needs_bf16
def test_bf16_keeps_float32_weights_and_state(corpus: Corpus) -> None:
    config = preset("test", hidden_size=8, num_steps=3, batch_size=4, device="cpu", precision="bf16")
    trainer = Trainer(config, corpus)
    trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    payload = trainer_payload(trainer)
    assert payload["config"]["precision"] == "bf16"
    assert all(t.dtype == torch.float32 for t in payload["model"].values())


def test_tf32_is_refused_on_the_cpu(corpus: Corpus) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        preset("test", device="cpu", precision="tf32")
    assert not supports_precision(CPU, "tf32")
    assert "tf32" not in supported_precisions(CPU) and supported_precisions(CPU)[0] == "fp32"
    if not torch.cuda.is_available():  # device auto lands on the CPU: the trainer refuses before training
        with pytest.raises(PrecisionError, match="precision 'tf32' is not supported on this machine's cpu"):
            Trainer(preset("test", device="auto", precision="tf32"), corpus)


def test_tf32_switches_the_cuda_matmul_flags_exactly_for_tf32() -> None:
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for precision, allowed in (("tf32", True), ("fp32", False), ("tf32", True), ("bf16", False)):
            set_matmul_precision(torch.device("cuda"), precision)
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (allowed, allowed)
        set_matmul_precision(CPU, "tf32")  # the CPU has no TF32: nothing changes
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="tf32 and bf16 on a GPU need a CUDA device")
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_tf32_and_bf16_on_cuda_are_within_one_percent_of_fp32(corpus: Corpus, precision: str) -> None:
    if not supports_precision(torch.device("cuda"), precision):
        pytest.skip(f"this GPU has no {precision}")
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        fp32 = short_run(corpus, "fp32", "cuda")
        low = short_run(corpus, precision, "cuda")
    finally:  # a trainer switches TF32 for the process: later tests get the flags as they were
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert low[2] < low[1] < low[0]  # it really trained
    for value, full in zip(low, fp32, strict=True):
        assert value == pytest.approx(full, rel=0.01)


def test_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, tf32"):
        ModelConfig(precision="fp16")  # type: ignore[arg-type]


class FirstProgressLines(Callbacks):
    """Records the seed's progress lines, exactly as printed, and stops after `lines` of them."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.printed: list[str] = []

    def on_log(self, p: StepProgress) -> None:
        self.printed.append(f"{p.fraction:.3f} perplexity: {p.ppl:.3f}")

    def should_stop(self) -> bool:
        return len(self.printed) >= self.lines


class StepCosts(Callbacks):
    """The running training perplexity after every step; stops after `steps` steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.ppls: list[float] = []

    def on_step(self, p: StepProgress) -> None:
        self.ppls.append(p.ppl)

    def should_stop(self) -> bool:
        return len(self.ppls) >= self.steps


def test_fp32_steps_are_the_plain_torch_steps_bit_for_bit(corpus: Corpus) -> None:
    """The trainer's fp32 step is the seed's step written with nothing but torch (the model's layers
    called one by one): same logits, loss, gradients, clipping and update, to the last bit, on any
    machine."""
    config = preset(
        "test", hidden_size=24, num_layers=2, num_steps=5, batch_size=4, keep_prob=0.5, max_grad_norm=0.5, device="cpu"
    )
    steps = 12
    trainer, costs = Trainer(config, corpus), StepCosts(steps)
    trainer.fit(costs)

    seed_everything(config.seed)
    model = LSTMLanguageModel(config, len(corpus.vocab))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.learning_rate)
    model.train()
    state, total, ppls = model.zero_state(config.batch_size), 0.0, []
    for step, (x, y) in enumerate(batches(corpus.train, config.batch_size, config.num_steps), start=1):
        out, state = model.lstm(model.dropout(model.embedding(x)), state)
        logits = model.decoder(model.dropout(out))
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        loss = loss / config.batch_size
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        state = (state[0].detach(), state[1].detach())
        total += loss.item()
        ppls.append(math.exp(total / (step * config.num_steps)))
        if step == steps:
            break
    assert costs.ppls == ppls
    for (name, ours), theirs in zip(trainer.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name


# The recorded run's first progress lines, on the CPU kinds they were made on: the same code rounds
# differently where the matrix-product and LSTM kernels that MKL and oneDNN pick for a CPU differ.
RECORDED_LINES = {
    "AuthenticAMD avx512": None,  # docs/results/logs/ptb-small-cpu.log itself
    "GenuineIntel amx": ["0.005 perplexity: 5159.630", "0.105 perplexity: 841.982", "0.204 perplexity: 625.353"],
}


def cpu_kind() -> str:
    """The CPU's vendor and its widest matrix unit: "AuthenticAMD avx512", "GenuineIntel amx", ..."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, flags=re.MULTILINE)
    flags = re.search(r"^flags\s*:(.*)$", info, flags=re.MULTILINE)
    flag_set = set(flags.group(1).split()) if flags else set()
    unit = "amx" if "amx_bf16" in flag_set else "avx512" if "avx512f" in flag_set else "avx2"
    return f"{vendor.group(1) if vendor else 'unknown'} {unit}"


@pytest.mark.ptb
@pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").is_file(), reason=f"no PTB corpus at {PTB_DIR}")
@pytest.mark.skipif(cpu_kind() not in RECORDED_LINES, reason=f"no run recorded on a {cpu_kind()} CPU")
def test_fp32_is_bit_identical_to_the_recorded_ptb_run(one_thread: None) -> None:
    recorded = RECORDED_LINES[cpu_kind()] or re.findall(
        r"^(\d\.\d{3} perplexity: \d+\.\d{3}) speed", PTB_LOG.read_text(), flags=re.MULTILINE
    )
    callbacks = FirstProgressLines(3)
    trainer = Trainer(preset("small", device="cpu"), Corpus.load(PTB_DIR))
    assert trainer.config.precision == "fp32"
    trainer.fit(callbacks)
    assert callbacks.printed == recorded[:3], (
        f"fp32 numbers moved on this {cpu_kind()} CPU (or its kernels round differently from the recorded ones)"
    )
