"""Using a model: `score`, `generate`, and naming models with `alias` and `aliases list|set|delete`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from client.api import Api, ApiError, read_events, unreachable
from client.output import Column, age, api, fail, fmt, handled, note, out, print_json, show_table, stdout_is_terminal

JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON instead of a table")]
ModelOption = Annotated[str, typer.Option("--model", "-m", help="job id, checkpoint id or alias")]
ENDED_AT_ONCE = "the model ended the text at once (it generated </s>); try --temperature or a longer prompt"


def read_sentences(source: str) -> list[str]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise fail(f"cannot read {source}: it is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def print_warnings(warnings: list[dict[str, Any]]) -> None:
    """Each warning of an answer on stderr, one line each: `warning: <message>`."""
    for warning in warnings:
        note(f"warning: {warning['message']}")


@handled
def score(
    ctx: typer.Context,
    model: ModelOption,
    source: Annotated[str, typer.Argument(help="a file of sentences, one a line; - for stdin")] = "-",
    pretokenized: Annotated[
        bool, typer.Option("--pretokenized", help="the lines are tokens already (default: the model's tokenizer)")
    ] = False,
    max_unk_rate: Annotated[
        float | None, typer.Option(help="refuse when the share of <unk> tokens, in all or in a sentence, is above it")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Perplexity of each sentence and of them all, per token, per word and in bits per byte."""
    sentences = read_sentences(source)
    if not sentences:
        raise fail("no sentences to score")
    request: dict[str, Any] = {"model": model, "sentences": sentences, "pretokenized": pretokenized}
    if max_unk_rate is not None:
        request["max_unk_rate"] = max_unk_rate
    body = api(ctx).post("/v1/score", json=request)
    print_warnings(body.get("warnings") or [])
    if as_json:
        print_json(body)
        return
    columns = (
        Column("#", justify="right"),
        Column("perplexity", justify="right"),
        Column("word ppl", justify="right", keep=3),
        Column("bits/byte", justify="right", keep=2),
        Column("tokens", justify="right", keep=4),
        Column("unk", justify="right", keep=1),
        Column("sentence", fixed=False),
    )
    rows = [
        [
            i,
            fmt(s["perplexity"]),
            fmt(s.get("word_perplexity")),
            fmt(s.get("bits_per_byte"), 3),
            s["num_tokens"],
            sum(s["is_unk"]),
            text,
        ]
        for i, (text, s) in enumerate(zip(sentences, body["sentences"], strict=True), start=1)
    ]
    show_table(columns, rows)
    a = body["aggregate"]
    note_line = (
        f"{a['num_sentences']} sentences, {a['num_tokens']} tokens ({a['num_unk']} <unk>), "
        f"{a.get('num_words', 0)} words, {body.get('tokenizer', '?')} tokenizer"
        f"{' (pretokenized)' if body.get('pretokenized') else ''}: "
        f"corpus perplexity {fmt(a['corpus_perplexity'])}, "
        f"mean sentence perplexity {fmt(a['mean_sentence_perplexity'])}, "
        f"word perplexity {fmt(a.get('word_perplexity'))}, bits per byte {fmt(a.get('bits_per_byte'), 3)}"
    )
    if stdout_is_terminal():
        out.print(note_line, markup=False)
    else:  # after the rows, a line a script can tell apart: it starts with "#"
        sys.stdout.write(f"# {note_line}\n")


@handled
def generate(
    ctx: typer.Context,
    model: ModelOption,
    prompt: Annotated[str, typer.Option("--prompt", help="the text to continue")],
    max_tokens: Annotated[int, typer.Option(help="words to generate")] = 20,
    temperature: Annotated[float, typer.Option(help="0 is greedy")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="sample from the k likeliest words")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling")] = None,
    seed: Annotated[int | None, typer.Option(help="the same seed gives the same text")] = None,
    n: Annotated[int, typer.Option(help="continuations")] = 1,
    pretokenized: Annotated[
        bool,
        typer.Option("--pretokenized", help="the prompt is tokens already; the text is the tokens joined by spaces"),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Continue a prompt, printing words as they come.

    Nothing is printed unless the server accepts the request; when the model ends the text at once,
    stderr says so."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "n": n,
        "pretokenized": pretokenized,
    }
    body |= {k: v for k, v in (("top_k", top_k), ("top_p", top_p), ("seed", seed)) if v is not None}
    client = api(ctx)
    if as_json or n > 1:
        result = client.post("/v1/generate", json=body)
        if as_json:
            print_json(result)
        else:
            for choice in result["choices"]:
                out.print(f"[{choice['index']}] {prompt} {choice['text']}".rstrip(), markup=False)
        for choice in result["choices"]:
            if ended_at_once(choice.get("finish_reason"), choice.get("tokens") or choice.get("text")):
                note(f"[{choice['index']}] {ENDED_AT_ONCE}" if n > 1 else ENDED_AT_ONCE)
        return
    started = False
    first = True
    words = 0
    reason = None
    for event in stream_post(client, "/v1/generate", body | {"stream": True}):
        if not started:
            sys.stdout.write(prompt)
            started = True
        for choice in event.get("choices", []):
            reason = choice.get("finish_reason") or reason
            if choice.get("token") is not None:
                words += 1
            text = choice.get("text") or ""
            if not text:
                continue
            # the first piece comes without a space: it starts the continuation, as `text` does
            sys.stdout.write(f" {text}" if first and prompt and not text.startswith(" ") else text)
            first = False
            sys.stdout.flush()
    if not started:
        sys.stdout.write(prompt)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if ended_at_once(reason, words):
        note(ENDED_AT_ONCE)


def ended_at_once(reason: str | None, generated: Any) -> bool:
    """The model chose the end of the sentence as its first token: nothing was generated."""
    return reason == "eos" and not generated


def stream_post(client: Api, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The JSON chunks of a streamed POST (`data: {...}` events until `data: [DONE]`)."""
    try:
        with client.http.stream("POST", path, json=body, timeout=httpx.Timeout(None, connect=10.0)) as response:
            if response.status_code >= 400:
                response.read()
                raise client.error(response)
            for event in read_events(response.iter_lines()):
                if event.data == "[DONE]":
                    return
                chunk = event.json()
                if "error" in chunk:
                    error = chunk["error"]
                    raise ApiError(error.get("message", "stream failed") if isinstance(error, dict) else str(error))
                yield chunk
    except httpx.TransportError as exc:
        raise unreachable(client.url, exc, "stream from") from None


def set_alias(client: Api, name: str, target: str, as_json: bool) -> None:
    body = client.request("PUT", f"/v1/models/aliases/{name}", json={"target": target}).json()
    if as_json:
        print_json(body)
        return
    out.print(f"alias {body['name']} -> {body['target']}", markup=False)


aliases = typer.Typer(help="Names of models: list, set and delete them.", no_args_is_help=True)


@aliases.command("list")
@handled
def aliases_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every alias and the job or checkpoint it names."""
    body = api(ctx).get("/v1/models/aliases")
    if as_json:
        print_json(body)
        return
    columns = (Column("alias"), Column("target"), Column("updated", justify="right", keep=1))
    show_table(columns, [[a["name"], a["target"], age(a.get("updated_at"))] for a in body["data"]])


@aliases.command("set")
@handled
def aliases_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the alias")],
    target: Annotated[str, typer.Argument(help="a job id (its best checkpoint) or a checkpoint id")],
    as_json: JsonFlag = False,
) -> None:
    """Point an alias at a job or a checkpoint (made if new)."""
    set_alias(api(ctx), name, target, as_json)


@aliases.command("delete")
@handled
def aliases_delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="the alias")]) -> None:
    """Remove an alias (the model it named stays)."""
    api(ctx).request("DELETE", f"/v1/models/aliases/{name}")
    out.print(f"alias {name} deleted", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(score)
    app.command()(generate)
    app.command("alias", help="Name a model: point an alias at a job or a checkpoint (the same as `aliases set`).")(
        aliases_set
    )
    app.add_typer(aliases, name="aliases")
