"""Highlighting search matches (knowledge_base/search/highlight.py): what a hit's title and
snippet show, and that the quick ways of folding and matching give what the careful ones do."""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knowledge_base.search import highlight as hl

# Characters that fold in every way there is: ASCII, full-width ASCII and the ideographic
# space, kana and kanji, half-width kana with their sound marks, combining accents, hangul
# syllables and conjoining letters, ligatures and letters that case-fold to two (ﬁ, ß),
# compatibility characters that widen (㈱, …, ①), and emoji beyond the BMP.
FOLDING = (
    "aZ9 -_.<>&\"'\n\t"
    "ＡＢｚ０１－（）：？\u3000"
    "返金請求書再発行のはがガパーカ"
    "ｶｷﾞﾊﾟｰﾞﾟ"
    "e\u0301\u0308\u3099"
    "한\u1100\u1161\u11a8"
    "ﬁßİΣς"
    "㈱…①㎡"
    "😀\U00020000"
)
texts = st.text(alphabet=FOLDING, max_size=40)


@settings(max_examples=500, deadline=None)
@given(texts)
def test_fold_is_nfkc_then_case_folding(text: str) -> None:
    assert hl.fold(text) == unicodedata.normalize("NFKC", text).casefold()


@settings(max_examples=500, deadline=None)
@given(texts)
def test_every_folded_character_maps_back_to_the_characters_it_came_from(text: str) -> None:
    folded = hl._Folded(text)
    groups: list[tuple[tuple[int, int], str]] = []
    for i, ch in enumerate(folded.folded):
        span = folded.span(i, i + 1)
        if groups and groups[-1][0] == span:
            groups[-1] = (span, groups[-1][1] + ch)
        else:
            groups.append((span, ch))
    # the spans tile the text in order, and each is folded to exactly its characters
    starts = [start for (start, _), _ in groups]
    ends = [end for (_, end), _ in groups]
    assert starts == [0, *ends[:-1]] if text else starts == []
    assert ends[-1:] == ([len(text)] if text else [])
    for (start, end), chars in groups:
        assert hl.fold(text[start:end]) == chars


def test_a_match_at_the_start_of_a_long_japanese_body() -> None:
    body = "返金のお手続きについて説明します。" + "ご契約内容の確認をお願いします。" * 60
    snippet = hl.snippet(body, hl.query_terms("返金"))
    assert snippet.startswith("<mark>返金</mark>の") and snippet.endswith("…")
    assert len(snippet) < hl.SNIPPET_CHARS + 40


def test_a_match_in_the_middle_of_a_long_japanese_body() -> None:
    filler = "ご契約内容の確認をお願いします。" * 40
    snippet = hl.snippet(filler + "請求書の再発行はマイページから。" + filler, ["請求書再発行"])
    assert "<mark>請求書</mark>の<mark>再発行</mark>はマイページから" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")


def test_a_match_at_the_end_of_a_long_japanese_body() -> None:
    body = "ご契約内容の確認をお願いします。" * 60 + "解約金はかかりません"
    snippet = hl.snippet(body, hl.query_terms("解約"))
    assert snippet.startswith("…") and snippet.endswith("<mark>解約</mark>金はかかりません")


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("start", "Refunds go back to the card you paid with. " + "Nothing else to do. " * 50),
        ("middle", "Nothing else to do. " * 25 + "Refunds take a week. " + "Nothing. " * 50),
        ("end", "Nothing else to do here. " * 50 + "Ask for a refund"),
    ],
)
def test_english_snippets_mark_the_match_wherever_it_is(where: str, body: str) -> None:
    snippet = hl.snippet(body, hl.query_terms("refund"))
    assert re.search(r"<mark>refund</mark>", snippet, re.IGNORECASE)
    assert snippet.startswith("…") == (where != "start")
    assert snippet.endswith("…") == (where != "end")
    # cut between words
    shown = re.sub("</?mark>", "", snippet).strip("…")
    assert body.startswith(shown) or f" {shown}" in body
    assert body.endswith(shown) or f"{shown} " in body


def test_misspelled_terms_mark_the_words_spelled_nearly_like_them() -> None:
    body = "Nothing to do. " * 30 + "Your refund arrives in a week. " + "Nothing. " * 30
    assert "<mark>refund</mark>" in hl.snippet(body, ["refnd"])
    assert "<mark>" not in hl.snippet(body, ["zzzzz"])


def test_snippets_and_titles_are_html_safe() -> None:
    body = "<script>alert(1)</script> & <b>返金</b> は " + "確認中 " * 80
    snippet = hl.snippet(body, ["返金"])
    assert "<script>" not in snippet and "&lt;script&gt;" in snippet
    assert "&amp;" in snippet and "&lt;b&gt;<mark>返金</mark>&lt;/b&gt;" in snippet
    title = hl.highlight('Refund "policy" <img src=x>', ["refund"])
    assert title == "<mark>Refund</mark> &quot;policy&quot; &lt;img src=x&gt;"


def test_marks_never_split_a_character_from_its_sound_mark_or_accent() -> None:
    # half-width ｶﾞｲﾄﾞ is ガイド; "cafe" + a combining acute is café
    assert hl.highlight("設定ｶﾞｲﾄﾞです", ["ガイド"]) == "設定<mark>ｶﾞｲﾄﾞ</mark>です"
    assert hl.highlight("Cafe\u0301 menu", ["café"]) == "<mark>Cafe\u0301</mark> menu"


def test_wide_and_astral_characters_do_not_shift_the_marks() -> None:
    assert hl.highlight("型番はＳＲ－５です", ["sr-5"]) == "型番は<mark>ＳＲ－５</mark>です"
    assert (
        hl.highlight("😀👍 返金 ㈱ OK", ["返金", "ok"])
        == "😀👍 <mark>返金</mark> ㈱ <mark>OK</mark>"
    )
    body = "😀" * 100 + "返金" + "。" * 200
    snippet = hl.snippet(body, ["返金"])
    assert "<mark>返金</mark>" in snippet and snippet.startswith("…")


def test_overlapping_pairs_of_a_term_mark_one_span() -> None:
    # ああい is not in the text, but both of its pairs are, overlapping: one mark over all
    assert hl.highlight("まあああね", ["ああい"]) == "ま<mark>あああ</mark>ね"


def test_elided_backend_fragments_get_an_ellipsis_where_the_text_goes_on() -> None:
    whole = "  Refunds\n\n go back to   the card. " + "More words here. " * 30 + "The end.  "
    assert hl.elide("x", "Refunds go back to the card.", whole) == "x…"
    assert hl.elide("x", "More words here.", whole) == "…x…"
    assert hl.elide("x", "More words here. The end.", whole) == "…x"
    assert hl.elide("x", whole, whole) == "x"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \n\t", max_size=300), st.integers(min_value=1, max_value=30))
def test_collapsed_ends_are_those_of_the_whole_collapsed_text(text: str, chars: int) -> None:
    collapsed = re.sub(r"\s+", " ", text).strip()
    assert hl._collapsed_start(text, chars) == collapsed[:chars]
    assert hl._collapsed_end(text, chars) == collapsed[-chars:]


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="abcdefr", min_size=3, max_size=9), st.text(alphabet="abcdefr", max_size=12)
)
def test_the_quick_spelling_check_agrees_with_difflib(term: str, word: str) -> None:
    matcher = SequenceMatcher(None, term, word, autojunk=False)
    expected = matcher.quick_ratio() >= 0.75 and matcher.ratio() >= 0.75
    assert hl._is_similar(term, word) == expected
