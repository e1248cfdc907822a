"""Request and response bodies of the inference API: models and aliases, scoring, generation and
the OpenAI-compatible completions.

Bounds that do not depend on the deployment are checked here (temperature finite and >= 0, top_p in
(0, 1], ...); the deployment's limits (`max_generate_tokens`, `max_sentences`, ...) are checked by
the core with the settings, and both answer 422 problem+json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.api.schemas import RequestModel
from app.inference.generation import Sampling, stop_sequences
from app.inference.registry import ModelRef

MAX_TOP_LOGPROBS = 20
MAX_SEED = 2**63 - 1
MAX_STOP_SEQUENCES = 16

StopText = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"\S")]  # one sequence: at least a word
ModelName = Field(min_length=1, max_length=200, description="a job id (its best checkpoint), checkpoint id or alias")
Precision = Literal["fp32", "bf16"]
PrecisionField = Field(
    None,
    description="fp32 or bf16 (the LSTM and the softmax product in bfloat16, log-softmax and sums in float32); "
    "default: the server's LSTMLM_INFERENCE_PRECISION",
)
PrecisionOut = Field(description="the precision that computed these numbers")
StopField = Field(
    None,
    description="a string (its words are one stop sequence) or a list of strings (one sequence each); "
    "a stop sequence ends the continuation and is not emitted",
)

PRETOKENIZED_DESCRIPTION = (
    "the text is the model's tokens already, separated by spaces: they are looked up as they are. "
    "Default false: raw text, cut by the model's own tokenizer (the one its training text was cut with)"
)
NORMALIZE_DESCRIPTION = (
    "deprecated, the earlier name: true is the default (the model's tokenizer), false is pretokenized: true"
)


class TextFields(RequestModel):
    """How a request's text meets the model: raw text through its tokenizer, or tokens as given."""

    pretokenized: bool | None = Field(None, description=PRETOKENIZED_DESCRIPTION)
    normalize: bool | None = Field(None, description=NORMALIZE_DESCRIPTION)

    @property
    def is_pretokenized(self) -> bool:
        if self.pretokenized is not None:
            return self.pretokenized
        return self.normalize is False


# --- models and aliases ---


class ModelCard(BaseModel):
    """A servable model, in the shape of OpenAI's model object plus what it is."""

    id: str = Field(description="the name to use: a job id or an alias")
    object: Literal["model"] = "model"
    created: int = Field(description="when the served checkpoint was written (Unix seconds)")
    owned_by: str = "lstm-lm-service"
    job_id: str
    job_status: str
    checkpoint_id: str = Field(description="the checkpoint this name serves now")
    epoch: int = Field(description="completed training epochs of that checkpoint")
    step: int
    kind: str = Field(description="epoch, interrupt or final")
    valid_ppl: float | None = Field(description="validation perplexity of that checkpoint")
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at this job or checkpoint")

    @classmethod
    def of(cls, ref: ModelRef, aliases: list[str]) -> ModelCard:
        return cls(
            id=ref.name,
            created=int(ref.created_at.timestamp()),
            job_id=ref.job_id,
            job_status=ref.job_status,
            checkpoint_id=ref.checkpoint_id,
            epoch=ref.epoch,
            step=ref.step,
            kind=ref.kind,
            valid_ppl=ref.valid_ppl,
            aliases=aliases,
        )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AliasIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=40, description="a job id or a checkpoint id")


class AliasOut(BaseModel):
    name: str
    target: str
    updated_at: datetime


class AliasList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AliasOut]


# --- scoring ---


class ScoreRequest(TextFields):
    model_config = ConfigDict(extra="forbid")

    model: str = ModelName
    sentences: list[str] = Field(
        min_length=1,
        description="each text is one sentence of raw text (or tokens, with pretokenized); an empty one is "
        "allowed (a blank line)",
    )
    log10: bool = Field(False, description="log-probabilities in base 10 (KenLM's convention) instead of base e")
    score_eos: bool = Field(True, description="also score the end of sentence (<eos>) after the last word")
    precision: Precision | None = PrecisionField
    max_unk_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="refuse (422) when the share of <unk> tokens, in all or in one sentence, is above it",
    )


class SentenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    tokens: list[str] = Field(description="the words as looked up (normalised if asked), then <eos> if scored")
    logprobs: list[float | None] = Field(description="log p(token | previous words) in base log_base; null: -inf")
    is_unk: list[bool] = Field(description="the token is out of the vocabulary (scored as <unk>) or is <unk>")
    total_logprob: float | None = Field(description="null when it overflows (-inf)")
    num_tokens: int
    num_unk: int
    perplexity: float | None = Field(
        description="exp(-mean natural-log p) over the tokens; null for a sentence with no token "
        "(an empty one with score_eos off) and when it overflows"
    )
    perplexity_without_unk: float | None = Field(description="the same over the tokens that are not <unk>")
    num_words: int = Field(description="whitespace-separated words of the text as given")
    num_bytes: int = Field(description="UTF-8 bytes of the text as given")
    word_perplexity: float | None = Field(
        description="exp(-total natural-log p / num_words): comparable across tokenizers; null with no word"
    )
    bits_per_byte: float | None = Field(description="-total log2 p / num_bytes; null for an empty text")
    unk_rate: float | None = Field(description="num_unk / num_tokens; null with no token")


class ScoreWarning(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sentence: int | None = Field(description="the sentence's index; null: all the sentences together")
    unk_rate: float
    message: str


class ScoreAggregate(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    num_tokens: int
    num_unk: int
    total_logprob: float | None = Field(description="sum over all tokens, in base log_base; null on overflow")
    num_sentences: int = Field(description="every sentence, empty ones included")
    corpus_perplexity: float | None = Field(
        description="token-weighted: exp(-total natural-log p / num_tokens); null with no token or on overflow"
    )
    corpus_perplexity_without_unk: float | None
    mean_sentence_perplexity: float | None = Field(
        description="the mean of the per-sentence perplexities of the sentences that have a token; null on overflow"
    )
    mean_sentence_perplexity_without_unk: float | None
    num_words: int
    num_bytes: int
    word_perplexity: float | None = Field(description="exp(-total natural-log p / num_words)")
    bits_per_byte: float | None = Field(description="-total log2 p / num_bytes")
    unk_rate: float | None = Field(description="num_unk / num_tokens")


class ScoreResponse(BaseModel):
    model: str
    job_id: str
    checkpoint_id: str
    log_base: Literal["e", "10"]
    tokenizer: str = Field(description="the model's tokenizer: whitespace, ptb, wikitext, bpe or unigram")
    pretokenized: bool = Field(description="whether the sentences were taken as tokens, not cut by the tokenizer")
    convention: str = Field(description="deprecated: the tokenizer's earlier name (plain for whitespace)")
    precision: Precision = PrecisionOut
    sentences: list[SentenceOut]
    aggregate: ScoreAggregate
    warnings: list[ScoreWarning] = Field(
        description="texts whose share of <unk> tokens is above the server's LSTMLM_UNK_WARN_RATE: unknown words "
        "score as the likely <unk> token and flatter a perplexity"
    )


# --- native generation ---


class SamplingFields(RequestModel):
    """Fields shared by /v1/generate and /v1/completions."""

    temperature: float = Field(1.0, ge=0, allow_inf_nan=False, description="0 is greedy (argmax)")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely words only")
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description="nucleus sampling mass, (0, 1]")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="the same seed gives the same text")
    n: int = Field(1, ge=1, description="continuations to generate")
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = StopField
    stream: bool = Field(False, description="Server-Sent Events, one token per event, ending with data: [DONE]")
    precision: Precision | None = PrecisionField

    @model_validator(mode="after")
    def _stop_words(self) -> SamplingFields:
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"stop: at most {MAX_STOP_SEQUENCES} stop sequences")
        texts = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if any(not text.split() for text in texts):
            raise ValueError("stop: a stop sequence needs at least one word")
        return self

    def sampling(self, max_tokens: int) -> Sampling:
        return Sampling(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            n=self.n,
            stop=stop_sequences(self.stop),
        )


class GenerateRequest(SamplingFields, TextFields):
    model_config = ConfigDict(extra="forbid")

    model: str = ModelName
    prompt: str = Field("", description="the start of a sentence; empty starts one from scratch")
    max_tokens: int = Field(30, ge=0, description="tokens to generate at most")
    logprobs: bool = Field(False, description="return each token's log p (natural log, untempered model)")
    top_logprobs: int = Field(0, ge=0, le=MAX_TOP_LOGPROBS, description="also the k most likely tokens per position")


class GenerateChoice(BaseModel):
    index: int
    text: str = Field(description="the generated tokens as readable text (the model's tokenizer detokenizes them)")
    tokens: list[str]
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    finish_reason: Literal["stop", "eos", "length"] = Field(
        description="stop: a stop sequence; eos: the model ended the sentence; length: max_tokens reached"
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    id: str
    object: Literal["generation"] = "generation"
    created: int
    model: str
    job_id: str
    checkpoint_id: str
    prompt_words: list[str] = Field(description="the prompt as the model read it: its tokens")
    precision: Precision = PrecisionOut
    choices: list[GenerateChoice]
    usage: Usage


class GenerateChunkChoice(BaseModel):
    index: int
    token: str | None = Field(description="the new word; null in the event that ends the choice")
    text: str = Field(description="text to append: the word with a space before it unless it is the first")
    logprob: float | None = None
    top_logprobs: dict[str, float] | None = None
    finish_reason: Literal["stop", "eos", "length"] | None = None


class GenerateChunk(BaseModel):
    id: str
    object: Literal["generation.chunk"] = "generation.chunk"
    created: int
    model: str
    precision: Precision = PrecisionOut
    choices: list[GenerateChunkChoice]
    usage: Usage | None = Field(None, description="only in the last event")


# --- OpenAI-compatible completions ---


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(SamplingFields, TextFields):
    """OpenAI's legacy completions request. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str = ModelName
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text, a list of texts, or token ids (a list of ids, or a list of such lists, as "
        "POST /tokenize gives them); each prompt is continued n times",
        json_schema_extra={"minItems": 1},  # a list holds at least one prompt (checked below)
    )
    max_tokens: int | None = Field(16, ge=0, description="0 with echo=true scores the prompt only")
    top_p: float | None = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="include log-probabilities: k alternatives"
    )
    echo: bool = Field(False, description="return the prompt before the completion (with its logprobs)")
    stream_options: StreamOptions | None = None
    # Accepted for compatibility; only their neutral values are supported, and the schema says so.
    presence_penalty: float = Field(0.0, json_schema_extra={"minimum": 0, "maximum": 0}, description="only 0")
    frequency_penalty: float = Field(0.0, json_schema_extra={"minimum": 0, "maximum": 0}, description="only 0")
    # Only null or n: no schema states that, so it is left out of the document (still checked here).
    best_of: SkipJsonSchema[int | None] = None
    logit_bias: dict[str, float] | None = Field(None, json_schema_extra={"maxProperties": 0}, description="only {}")
    suffix: str | None = Field(None, json_schema_extra={"maxLength": 0}, description="only empty")
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt: give at least one text")
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not supported (use 0)")
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported (leave it out or set it to n)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.suffix:
            raise ValueError("suffix is not supported")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(item, int) for item in prompt):
            return [[int(item) for item in prompt]]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class ScopedCompletionRequest(CompletionRequest):
    """A completions request under a model's URL: `model` may be left out (it is the URL's)."""

    model: str | None = Field(  # type: ignore[assignment]
        None, min_length=1, max_length=200, description="the URL's model, or left out; another model is a 422"
    )


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None] = Field(description="natural log p of each token; the prompt's first is null")
    top_logprobs: list[dict[str, float] | None] = Field(
        description="the k most likely words per position (+ the token)"
    )
    text_offset: list[int] = Field(description="character offset of each token in prompt + completion text")


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = Field(None, description="the checkpoint id that answered")
    precision: Precision = Field("fp32", description="extension: the precision that computed the answer")


# --- tokenizer (vLLM's /tokenizer_info, /tokenize and /detokenize) ---


ModelOrDefault = Field(
    None, min_length=1, max_length=200, description="a job id, checkpoint id or alias; none: the alias `default`"
)


ModelPath = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the model this URL serves: a job id, checkpoint id or alias",
    ),
]


class TokenizerInfo(BaseModel):
    model: str = Field(description="the model whose vocabulary this is")
    checkpoint_id: str
    tokenizer_class: Literal["word-level", "subword"]
    tokenizer: str = Field(description="whitespace, ptb, wikitext, bpe or unigram")
    lowercase: bool = Field(description="whether the tokenizer lower-cases text first")
    eos_token: str = Field(description="the end of a sentence; before a text it is the start-of-sentence context")
    bos_token: None = Field(None, description="none: every sentence starts after an <eos>")
    pad_token: None = None
    unk_token: str | None = Field(
        description="the token every out-of-vocabulary word becomes; null for a subword model, which has none"
    )
    vocab_size: int
    model_max_length: int = Field(description="most tokens in one scored sentence or prompt on this server")


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = ModelOrDefault
    prompt: str = Field(max_length=10_000_000, description="raw text, cut by the model's tokenizer as scoring cuts it")
    add_special_tokens: bool = Field(False, description="accepted for compatibility: no token is ever added")
    pretokenized: bool = Field(False, description="the prompt is tokens already: split on whitespace")


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int] = Field(description="vocabulary ids; a word outside the vocabulary is the id of <unk>")
    token_strs: list[str] = Field(description="the vocabulary word of each id")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = ModelOrDefault
    tokens: list[int] = Field(description="vocabulary ids")
    pretokenized: bool = Field(False, description="join the tokens with single spaces instead of detokenizing")


class DetokenizeResponse(BaseModel):
    prompt: str = Field(description="the text of the ids, as the model's tokenizer writes it")
