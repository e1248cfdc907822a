"""Tokenizers on sentences written as people write them: numbers, money, percentages, contractions,
hyphens and quotes, for each kind, and their round trips; text already in a kind's form unchanged;
line ends and byte-order marks; subword models that know every text."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.tokenizers import (
    BPE,
    PTB,
    UNIGRAM,
    WHITESPACE,
    WIKITEXT,
    Tokenizer,
    TokenizerError,
    detect,
    split_lines,
    train_subword,
)

PLAIN = WHITESPACE


def to_words(text: str, kind: str) -> list[str]:
    return Tokenizer(kind).tokens(text)


def to_text(tokens: list[str], kind: str) -> str:
    return Tokenizer(kind).text(tokens)


def text_delta(previous: list[str], token: str, kind: str) -> str:
    return Tokenizer(kind).text_delta(previous, token)


PTB_CASES = [
    ("The company's shares rose 5.2% on Monday.", "the company 's shares rose N N on monday"),
    ("It isn't a state-of-the-art plan, he said.", "it is n't a state-of-the-art plan he said"),
    ('"We\'ll pay $1,000," said Mr. Smith of AT&T.', "we 'll pay $ N said mr. smith of at&t"),
    ("Investors' money fell 30% to $4.5 million in the U.S.", "investors ' money fell N N to $ N million in the u.s."),
    ("They don't own 1/2 of the #2 firm (yet)!", "they do n't own N of the # N firm yet"),
    ("She'd sold 3,500 shares in 1987 -- the 1980s' boom.", "she 'd sold N shares in N the 1980s ' boom"),
]

WIKITEXT_CASES = [
    ("The company's shares rose 5.2% on Monday.", "The company 's shares rose 5 @.@ 2 % on Monday ."),
    ("It isn't a state-of-the-art plan, he said.", "It isn 't a state @-@ of @-@ the @-@ art plan , he said ."),
    ('"We\'ll pay $1,000," said Smith.', '" We \'ll pay $ 1 @,@ 000 , " said Smith .'),
    ("Profits fell 30% to $4.5 million (in 2011).", "Profits fell 30 % to $ 4 @.@ 5 million ( in 2011 ) ."),
    ("They don't own the Media.Vision brand.", "They don 't own the Media.Vision brand ."),
]


@pytest.mark.parametrize(("raw", "tokens"), PTB_CASES)
def test_ptb_tokens_of_raw_sentences(raw: str, tokens: str) -> None:
    words = to_words(raw, PTB)
    assert words == tokens.split()
    assert to_words(to_text(words, PTB), PTB) == words  # the readable text reads back the same


@pytest.mark.parametrize(("raw", "tokens"), WIKITEXT_CASES)
def test_wikitext_tokens_of_raw_sentences_and_round_trip(raw: str, tokens: str) -> None:
    words = to_words(raw, WIKITEXT)
    assert words == tokens.split()
    assert to_text(words, WIKITEXT) == raw  # detokenize(tokenize(x)) == x


def test_ptb_text_reads_back_as_people_write_it() -> None:
    assert to_text(["the", "company", "'s", "shares", "do", "n't", "rise"], PTB) == "the company's shares don't rise"
    assert to_text(["investors", "'", "money"], PTB) == "investors' money"


@pytest.mark.parametrize(
    "line",
    [
        "the company said it expects N sales in the u.s. to rise N N",
        "mr. <unk> is chairman of <unk> n.v. the dutch publishing group",
        "at&t 's $ N million bid for the # N firm was n't a mid-1980s deal",
        "the investors ' shares of s&p 's index",
    ],
)
def test_ptb_form_text_is_left_unchanged_by_the_ptb_convention(line: str) -> None:
    assert to_words(line, PTB) == line.split()


@pytest.mark.parametrize(
    "line",
    [
        "= Valkyria Chronicles III =",
        'The game \'s <unk> , " Nameless " , is a role @-@ playing game of 1 @,@ 000 units at 76 @.@ 64 % .',
        "It did n't sell ; they do n't know",
    ],
)
def test_wikitext_form_text_is_left_unchanged_by_the_wikitext_convention(line: str) -> None:
    words = to_words(line, WIKITEXT)
    if "n't" in line:  # Treebank's split; WikiText writes don 't
        assert words == ["It", "didn", "'t", "sell", ";", "they", "don", "'t", "know"]
    else:
        assert words == line.split()


def test_plain_is_whitespace() -> None:
    raw = "The company's  shares\trose 5.2%"
    assert to_words(raw, PLAIN) == raw.split()
    assert to_text(to_words(raw, PLAIN), PLAIN) == "The company's shares rose 5.2%"


def test_detect() -> None:
    assert detect(["the", "company", "'s", "N", "shares", "rose", "N", "N", "in", "the", "1980s"]) == PTB
    assert detect(["The", "game", "'s", "role", "@-@", "playing"]) == WIKITEXT
    assert detect(["the", "cat", "sat", "on", "3", "mats"]) == PLAIN  # a number in digits: not PTB
    assert detect(["The", "cat", "sat", "on", "N", "mats"]) == PLAIN  # capitals: not PTB
    assert detect(["the", "cat", "sat"]) == PLAIN  # nothing tells


@pytest.mark.parametrize(
    ("convention", "raw"),
    [(PTB, raw) for raw, _ in PTB_CASES] + [(WIKITEXT, raw) for raw, _ in WIKITEXT_CASES] + [(PLAIN, "a b  c")],
)
def test_streamed_pieces_join_to_the_whole_text(convention: str, raw: str) -> None:
    # What a stream sends word by word must add up to the text the whole answer shows.
    words = to_words(raw, convention)
    pieces = [text_delta(words[:i], word, convention) for i, word in enumerate(words)]
    assert "".join(pieces) == to_text(words, convention)


# --- every kind: lines, byte-order marks, lower case ---


def test_lines_end_at_crlf_cr_and_lf_and_lose_a_leading_byte_order_mark() -> None:
    assert split_lines("\ufeffone two\r\nthree\rfour\nfive\n") == ["one two", "three", "four", "five"]
    assert split_lines("a\n\nb") == ["a", "", "b"]  # a blank line is a line
    assert split_lines("") == []
    assert split_lines("a\r\n\ufeffb\r") == ["a", "b"]  # a mark at a sentence's start too


@pytest.mark.parametrize("kind", [WHITESPACE, PTB, WIKITEXT])
def test_a_byte_order_mark_never_sticks_to_the_first_word(kind: str) -> None:
    tokenizer = Tokenizer(kind)
    assert tokenizer.tokens("\ufeffthe cat sat") == tokenizer.tokens("the cat sat")


def test_lowercase_keeps_the_special_tokens() -> None:
    assert Tokenizer(WHITESPACE, lowercase=True).tokens("The Cat <unk> N") == ["the", "cat", "<unk>", "N"]
    assert Tokenizer(WIKITEXT, lowercase=True).tokens("The state-of-the-art") == [
        "the",
        "state",
        "@-@",
        "of",
        "@-@",
        "the",
        "@-@",
        "art",
    ]
    assert Tokenizer(PTB).lowercase  # PTB's text is lower case, whatever is asked
    with pytest.raises(TokenizerError):
        Tokenizer("sentencepiece")
    with pytest.raises(TokenizerError, match="trained model"):
        Tokenizer(BPE)


def test_title_case_reads_like_the_original_in_ptb() -> None:
    original = "the company said it expects N sales in the u.s. to rise"
    assert to_words(original.title(), PTB) == original.split()


# --- subword models ---


@pytest.fixture(scope="module")
def english() -> list[str]:
    from harness import raw_english_lines

    return raw_english_lines()


@pytest.mark.parametrize("kind", [BPE, UNIGRAM])
def test_a_subword_model_knows_every_text_and_writes_it_back(kind: str, english: list[str]) -> None:
    tokenizer = train_subword(kind, english[:3000], vocab_size=2000)
    pieces = set(tokenizer.pieces())
    assert len(pieces) <= 2000 and "<unk>" in pieces
    for line in [*english[3000:3200], "Ünïcödé — 漢字, emoji 🙂 and\ttabs", "<unk> is just text here"]:
        tokens = tokenizer.tokens(line)
        assert set(tokens) <= pieces, line  # byte fallback: nothing is unknown
        assert tokenizer.text(tokens) == " ".join(line.split())  # whitespace aside, exactly the text
        streamed = "".join(tokenizer.text_delta(tokens[:i], t) for i, t in enumerate(tokens))
        assert streamed + tokenizer.text_rest(tokens) == tokenizer.text(tokens)
        assert tokenizer.text_rest(tokens) == ""  # every character complete
    cut = tokenizer.tokens("snow ☃")[:-1]  # a character's bytes, the last one missing
    assert "".join(tokenizer.text_delta(cut[:i], t) for i, t in enumerate(cut)) == "snow "
    assert tokenizer.text_rest(cut) == tokenizer.text(cut)[len("snow ") :] != ""
    assert "<eos>" in tokenizer.tokens("a <eos> b")  # the end-of-sentence token, for every kind


def test_subword_training_is_deterministic_and_lowercase_applies(english: list[str]) -> None:
    first = train_subword(BPE, english[:2000], vocab_size=1000)
    assert train_subword(BPE, english[:2000], vocab_size=1000).model == first.model
    lower = train_subword(BPE, english[:2000], vocab_size=1000, lowercase=True)
    assert all(piece == piece.lower() for piece in lower.tokens("The GNU General Public License"))
    assert train_subword(BPE, english[:2000], vocab_size=1000, max_sentences=500).model != first.model
    with pytest.raises(TokenizerError, match="no text"):
        train_subword(BPE, ["", "   "])


def test_a_tokenizer_survives_its_folder_and_its_payload(tmp_path: Path, english: list[str]) -> None:
    tokenizer = train_subword(UNIGRAM, english[:1000], vocab_size=500, lowercase=True)
    tokenizer.save(tmp_path)
    assert Tokenizer.load(tmp_path) == tokenizer
    assert Tokenizer.from_payload(tokenizer.to_payload()) == tokenizer
    assert Tokenizer.load(tmp_path / "none") is None
    word_level = Tokenizer(WIKITEXT, min_count=3)
    word_level.save(tmp_path / "w" if (tmp_path / "w").mkdir() is None else tmp_path)
    assert Tokenizer.load(tmp_path / "w") == word_level
