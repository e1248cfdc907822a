"""POST /v1/score through the real app: per-token numbers against a direct token-by-token
computation, batch and padding invariance, `<unk>` flags, log10, the end marker, PTB normalisation
and the aggregates."""

from __future__ import annotations

import math
import random
from typing import Any

from fastapi.testclient import TestClient

from .conftest import WORDS, InferenceService, ModelFiles, close, hand_logprobs


def score(client: TestClient, model: str, sentences: list[str], **options: Any) -> dict[str, Any]:
    response = client.post("/v1/score", json={"model": model, "sentences": sentences, **options})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_per_token_numbers_equal_a_direct_computation(inference_service: InferenceService, direct: ModelFiles) -> None:
    sentences = ["the cat sat on the mat", "a dog ran", "N", "red red red big cat"]
    body = score(inference_service.client, inference_service.job_id, sentences)
    assert body["checkpoint_id"] == inference_service.best_checkpoint_id
    assert body["log_base"] == "e"
    for text, out in zip(sentences, body["sentences"], strict=True):
        tokens = [*text.split(), "<eos>"]
        expected = hand_logprobs(direct, tokens)
        assert out["tokens"] == tokens
        assert close(out["logprobs"], expected, 1e-5)
        assert math.isclose(out["total_logprob"], math.fsum(expected), abs_tol=1e-5)
        assert out["num_tokens"] == len(tokens)
        assert math.isclose(out["perplexity"], math.exp(-math.fsum(expected) / len(tokens)), rel_tol=1e-5)
        assert out["num_unk"] == 0 and out["perplexity_without_unk"] == out["perplexity"]


def test_a_sentence_gets_the_same_numbers_alone_in_a_batch_of_50_and_padded(
    inference_service: InferenceService,
) -> None:
    client, model = inference_service.client, inference_service.job_id
    target = "the big dog sat on a mat"
    alone = score(client, model, [target])["sentences"][0]["logprobs"]
    rng = random.Random(0)
    others = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(49)]
    in_batch = score(client, model, [*others[:20], target, *others[20:]])
    assert len(in_batch["sentences"]) == 50
    long_ones = [" ".join(["the"] * 90), " ".join(["cat", "ran"] * 45)]
    padded = score(client, model, [long_ones[0], target, long_ones[1]])["sentences"][1]["logprobs"]
    assert close(in_batch["sentences"][20]["logprobs"], alone, 1e-5)
    assert close(padded, alone, 1e-5)
    # every sentence of the batch equals its own request, and the order is kept
    for text, out in list(zip([*others[:20], target, *others[20:]], in_batch["sentences"], strict=True))[:8]:
        assert out["tokens"][:-1] == text.split()
        assert close(out["logprobs"], score(client, model, [text])["sentences"][0]["logprobs"], 1e-5)


def test_unknown_words_are_flagged_scored_as_unk_and_left_out_of_the_without_unk_numbers(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    body = score(inference_service.client, inference_service.job_id, ["the zebra sat on <unk> mat"])
    out = body["sentences"][0]
    assert out["tokens"] == ["the", "zebra", "sat", "on", "<unk>", "mat", "<eos>"]
    assert out["is_unk"] == [False, True, False, False, True, False, False]
    assert out["num_unk"] == 2
    # an unknown word is scored as <unk>, never dropped
    assert close(out["logprobs"], hand_logprobs(direct, ["the", "<unk>", "sat", "on", "<unk>", "mat", "<eos>"]))
    known = [lp for lp, unk in zip(out["logprobs"], out["is_unk"], strict=True) if not unk]
    assert math.isclose(out["perplexity_without_unk"], math.exp(-sum(known) / len(known)), rel_tol=1e-9)
    assert body["aggregate"]["num_unk"] == 2


def test_log10_reports_kenlm_logs_and_the_same_perplexity(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    sentences = ["the cat sat", "a dog ran fast on the mat"]
    natural = score(client, model, sentences)
    ten = score(client, model, sentences, log10=True)
    assert ten["log_base"] == "10"
    for e, t in zip(natural["sentences"], ten["sentences"], strict=True):
        assert close(t["logprobs"], [lp / math.log(10) for lp in e["logprobs"]], 1e-9)
        assert math.isclose(t["total_logprob"], e["total_logprob"] / math.log(10), rel_tol=1e-9)
        assert math.isclose(t["perplexity"], e["perplexity"], rel_tol=1e-12)
        assert math.isclose(t["perplexity"], 10 ** (-t["total_logprob"] / t["num_tokens"]), rel_tol=1e-9)
    assert math.isclose(ten["aggregate"]["corpus_perplexity"], natural["aggregate"]["corpus_perplexity"])


def test_score_eos_false_drops_only_the_end_marker(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    with_eos = score(client, model, ["the dog ran"])["sentences"][0]
    without = score(client, model, ["the dog ran"], score_eos=False)["sentences"][0]
    assert without["tokens"] == ["the", "dog", "ran"]
    assert close(without["logprobs"], with_eos["logprobs"][:-1], 1e-6)


def test_raw_text_is_cut_by_the_model_tokenizer_by_default(inference_service: InferenceService) -> None:
    """The tiny corpus is lower case with N for numbers: its model's tokenizer is detected as ptb."""
    client, model = inference_service.client, inference_service.job_id
    body = score(client, model, ["The Cat's 42 mats, 1,000.5% RED!"])
    assert (body["tokenizer"], body["convention"], body["pretokenized"]) == ("ptb", "ptb", False)
    raw = body["sentences"][0]
    assert raw["tokens"] == ["the", "cat", "'s", "N", "mats", "N", "N", "red", "<eos>"]
    assert score(client, model, ["The Cat's 42 mats, 1,000.5% RED!"], normalize=True) == body  # the earlier name
    same = score(client, model, ["the cat 's N mats N N red"], pretokenized=True)["sentences"][0]
    assert close(raw["logprobs"], same["logprobs"], 1e-6)
    for options in ({"pretokenized": True}, {"normalize": False}):  # today's and the earlier name
        untouched = score(client, model, ["The Cat sat 42"], **options)
        assert untouched["pretokenized"] is True
        assert untouched["sentences"][0]["tokens"] == ["The", "Cat", "sat", "42", "<eos>"]
        assert untouched["sentences"][0]["is_unk"] == [True, True, False, True, False]
    # Text already in PTB's form is left as it is: N stays the number token, <unk> stays <unk>.
    ptb = score(client, model, ["the cat sat N times & <unk> red"])["sentences"][0]
    assert ptb["tokens"][:-1] == ["the", "cat", "sat", "N", "times", "&", "<unk>", "red"]


def test_words_bytes_and_unknown_words_are_counted_and_warned_about(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    sentences = ["The cat sat on the mat", "  the  Zebra\tsat ", "Üñ zebra yak gnu"]
    body = score(client, model, sentences, pretokenized=True, log10=True)
    for text, s in zip(sentences, body["sentences"], strict=True):
        total_ln = s["total_logprob"] * math.log(10)  # log10: the per-word and per-byte numbers are still e-based
        assert s["num_words"] == len(text.split()) and s["num_bytes"] == len(text.encode())
        assert math.isclose(s["word_perplexity"], math.exp(-total_ln / s["num_words"]), rel_tol=1e-9)
        assert math.isclose(s["bits_per_byte"], -total_ln / math.log(2) / s["num_bytes"], rel_tol=1e-9)
        assert s["unk_rate"] == s["num_unk"] / s["num_tokens"]
        assert math.isclose(s["perplexity"], math.exp(-total_ln / s["num_tokens"]), rel_tol=1e-9)
    aggregate = body["aggregate"]
    assert aggregate["num_words"] == sum(len(t.split()) for t in sentences)
    assert aggregate["num_bytes"] == sum(len(t.encode()) for t in sentences)
    total_ln = aggregate["total_logprob"] * math.log(10)
    assert math.isclose(aggregate["word_perplexity"], math.exp(-total_ln / aggregate["num_words"]), rel_tol=1e-9)
    assert aggregate["unk_rate"] == aggregate["num_unk"] / aggregate["num_tokens"]
    # Over the server's 5%: the sentences with unknown words, and all of them together, are flagged.
    warned = {w["sentence"]: w for w in body["warnings"]}
    assert set(warned) == {0, 1, 2, None}  # "The" is not a word of this lower-case model
    assert warned[2]["unk_rate"] == body["sentences"][2]["unk_rate"] == 0.8
    assert "4 of 5 tokens (80%) are <unk>" in warned[2]["message"]
    assert score(client, model, ["the cat sat on the mat"])["warnings"] == []

    refused = client.post(
        "/v1/score", json={"model": model, "sentences": sentences, "pretokenized": True, "max_unk_rate": 0.5}
    )
    assert refused.status_code == 422
    problem = refused.json()
    assert (problem["index"], problem["unk_rate"]) == (2, 0.8)  # the aggregate (0.375) is under it
    assert problem["detail"].startswith("sentences[2]: 4 of 5 tokens (80%) are <unk>")
    assert "max_unk_rate is 0.5" in problem["detail"]
    over_all = {"model": model, "sentences": sentences, "pretokenized": True, "max_unk_rate": 0.3}
    assert client.post("/v1/score", json=over_all).json()["unk_rate"] == aggregate["unk_rate"]
    allowed = {"model": model, "sentences": sentences, "pretokenized": True, "max_unk_rate": 0.9}
    assert client.post("/v1/score", json=allowed).status_code == 200
    bad = {"model": model, "sentences": ["a"], "max_unk_rate": 1.5}
    assert client.post("/v1/score", json=bad).status_code == 422


def test_title_case_no_longer_flatters_a_ptb_model(inference_service: InferenceService) -> None:
    """Lines in Title Case read as the originals by default (ptb lower-cases); taken as they are, they
    are mostly <unk> (which flatters a model that saw <unk> often, as PTB's did) and get a warning."""
    client, model = inference_service.client, inference_service.job_id
    lines = inference_service.run.corpus_dir.joinpath("test.txt").read_text().splitlines()[:30]
    titled = [line.title() for line in lines]
    original = score(client, model, lines)["aggregate"]
    assert score(client, model, titled)["aggregate"] == original
    raw = score(client, model, titled, pretokenized=True)
    assert raw["aggregate"]["unk_rate"] > 0.5
    assert any(w["sentence"] is None for w in raw["warnings"])


def test_aggregates_say_what_they_average(inference_service: InferenceService) -> None:
    body = score(inference_service.client, inference_service.job_id, ["the cat sat on the mat", "zebra", "a dog"])
    sentences, agg = body["sentences"], body["aggregate"]
    every = [lp for s in sentences for lp in s["logprobs"]]
    known = [lp for s in sentences for lp, u in zip(s["logprobs"], s["is_unk"], strict=True) if not u]
    assert agg["num_sentences"] == 3 and agg["num_tokens"] == len(every) == 7 + 2 + 3
    assert math.isclose(agg["corpus_perplexity"], math.exp(-math.fsum(every) / len(every)), rel_tol=1e-9)
    assert math.isclose(agg["corpus_perplexity_without_unk"], math.exp(-math.fsum(known) / len(known)), rel_tol=1e-9)
    mean = sum(s["perplexity"] for s in sentences) / 3
    assert math.isclose(agg["mean_sentence_perplexity"], mean, rel_tol=1e-9)
    mean_known = sum(s["perplexity_without_unk"] for s in sentences) / 3
    assert math.isclose(agg["mean_sentence_perplexity_without_unk"], mean_known, rel_tol=1e-9)
    assert agg["corpus_perplexity"] != agg["mean_sentence_perplexity"]


def test_all_unknown_sentence_has_no_perplexity_without_unk(inference_service: InferenceService) -> None:
    out = score(inference_service.client, inference_service.job_id, ["zebra"], score_eos=False)["sentences"][0]
    assert out["is_unk"] == [True] and out["perplexity_without_unk"] is None


def test_blank_lines_are_sentences_with_only_the_end_marker(inference_service: InferenceService) -> None:
    client, job = inference_service.client, inference_service.job_id
    lines = ["the cat sat", "", "a dog", "   "]
    body = score(client, job, lines)
    blank = body["sentences"][1]
    alone = score(client, job, ["<eos>"], score_eos=False)["sentences"][0]  # p(<eos> | <eos>)
    assert blank["tokens"] == ["<eos>"] and blank["num_tokens"] == 1
    assert close(blank["logprobs"], alone["logprobs"], 1e-5)
    assert body["sentences"][3]["logprobs"] == blank["logprobs"]
    agg = body["aggregate"]
    assert agg["num_sentences"] == 4 and agg["num_tokens"] == 4 + 1 + 3 + 1
    # The others are unchanged by the blank lines around them.
    assert close(body["sentences"][0]["logprobs"], score(client, job, ["the cat sat"])["sentences"][0]["logprobs"])


def test_without_score_eos_a_blank_line_counts_nothing(inference_service: InferenceService) -> None:
    client, job = inference_service.client, inference_service.job_id
    body = score(client, job, ["the cat sat", "", "a dog"], score_eos=False)
    blank = body["sentences"][1]
    assert blank["tokens"] == [] and blank["num_tokens"] == 0 and blank["total_logprob"] == 0
    assert blank["perplexity"] is None and blank["perplexity_without_unk"] is None
    without = score(client, job, ["the cat sat", "a dog"], score_eos=False)["aggregate"]
    agg = body["aggregate"]
    assert agg["num_sentences"] == 3 and agg["num_tokens"] == without["num_tokens"] == 5
    for key in ("corpus_perplexity", "mean_sentence_perplexity", "total_logprob"):
        assert math.isclose(agg[key], without[key], rel_tol=1e-6)  # left out of the sums and of the mean
    nothing = score(client, job, ["", " "], score_eos=False)["aggregate"]
    assert nothing["num_tokens"] == 0 and nothing["corpus_perplexity"] is None
    assert nothing["mean_sentence_perplexity"] is None
