"""Text conventions on sentences written as people write them: numbers, money, percentages,
contractions, hyphens and quotes, for each corpus convention, and their round trips."""

from __future__ import annotations

import pytest

from app.inference.conventions import PLAIN, PTB, WIKITEXT, detect, text_delta, to_text, to_words

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
