"""Highlighting search matches in HTML, for every backend.

Text is compared folded (NFKC, case-folded: "ＰＡＳＳ１" finds "pass1") but shown as it was
written, so each folded character keeps the index of the original character it came from.
Three kinds of match are marked, in this order of preference for each query term:

- the term itself, anywhere (a partial word too: "passw" in "password");
- for Japanese and Chinese, which have no spaces to find words by, the pieces of the term
  (two characters or more) that occur: "請求書再発行" marks "請求書" and "再発行" in
  "請求書の再発行" (but not pieces of hiragana only, such as the したい of 「返品したい」);
- for other scripts, whole words spelled nearly like the term: "refnd" marks "refund",
  "refunds" marks "refund".

Everything else is HTML-escaped; the result is safe to put into a page as is.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
from difflib import SequenceMatcher

SNIPPET_CHARS = 160
# ts_headline and Elasticsearch mark matches with these private-use characters, which never
# survive into stored text (see `strip_sentinels`), so escaping can happen after marking.
START, STOP = "\ue000", "\ue001"

_WORD = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")
_FUZZY_RATIO = 0.75
_LATIN = re.compile(r"[^\W_\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f\uac00-\ud7af]{2,}")
_HIRAGANA = re.compile("[\u3041-\u309f]+")


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFF66 <= code <= 0xFF9F  # half-width katakana
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
    )


def fold(text: str) -> str:
    """How text is compared: NFKC, then case-folded.

    Computed the cheap way where that gives the same string: ASCII only needs lower case, and
    Japanese text is usually NFKC already but for its full-width punctuation (（, ：, ？),
    which `_narrowed` replaces first, so the full normalization (about 50 µs for a body of
    900 characters, most of a search's highlighting time) is rarely needed."""
    if text.isascii():
        return text.lower()
    narrow = _narrowed(text)
    if unicodedata.is_normalized("NFKC", narrow):
        return narrow.casefold()
    return unicodedata.normalize("NFKC", narrow).casefold()


# Full-width forms of ASCII (U+FF01..U+FF5E: ＳＲ－５, （, ：) and the ideographic space: NFKC
# maps each to one ASCII character and nothing else, so replacing them beforehand leaves the
# NFKC of the text unchanged (its compatibility decomposition is the same) while making most
# Japanese text normalized already.
_WIDE = re.compile("[\u3000\uff01-\uff5e]")


def _narrowed(text: str) -> str:
    for ch in set(_WIDE.findall(text)):
        text = text.replace(ch, " " if ch == "\u3000" else chr(ord(ch) - 0xFEE0))
    return text


def query_terms(query: str) -> list[str]:
    """The words of a search box entry worth marking, folded, longest first.

    Web-search syntax is understood as far as marking needs: quotes are dropped, `-word`
    (excluded) and a bare `or` are not marked.
    """
    terms: list[str] = []
    for raw in fold(query).replace('"', " ").split():
        if raw.startswith("-") or raw == "or":
            continue
        whole = raw.strip(".,;:!?()[]{}<>'")
        # "zx-99812" is marked as one, and its parts also where they stand alone
        for word in [whole, *_WORD.findall(raw)]:
            if word and word not in terms:
                terms.append(word)
    return sorted(terms, key=len, reverse=True)


def words(text: str) -> list[str]:
    """The words of `text`, folded, in order (a run of Japanese counts as one word)."""
    return _WORD.findall(fold(text))


def strip_sentinels(text: str) -> str:
    return text.replace(START, "").replace(STOP, "")


# Characters seen to fold to exactly one character on their own and never with the one
# before them: text made of these folds one for one (see _Folded).
_ONE_FOR_ONE: set[str] = set()


def _one_for_one(text: str) -> bool:
    unseen = set(text) - _ONE_FOR_ONE
    for ch in unseen:
        if len(fold(ch)) != 1 or _is_mark(ch):
            return False
    if len(_ONE_FOR_ONE) < 100_000:
        _ONE_FOR_ONE.update(unseen)
    return True


class _Folded:
    """`text` folded, with the original index of every folded character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None
        self._ends: list[int] | None = None
        # Most texts fold character by character, one for one ("Ｗｉ" to "wi", "ｶ" to "カ"):
        # then folded index i is original index i, with no per-character bookkeeping. First
        # the cheap proof of it: ASCII; or, once full-width ASCII is narrowed, text that NFKC
        # leaves as it is (no character of it changes alone then), with no mark to fold into
        # the character before it, and that case folding keeps at its length.
        if text.isascii():
            self.folded = text.lower()
            return
        narrow = _narrowed(text)
        if _mark_or_astral().search(narrow) is None and unicodedata.is_normalized("NFKC", narrow):
            self.folded = narrow.casefold()
            if len(self.folded) == len(text):
                return
        if _one_for_one(text):
            self.folded = fold(text)
            if len(self.folded) == len(text):
                return
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        i = 0
        while i < len(text):
            # A base character and the marks that follow it fold together: half-width
            # "ｶﾞ" is one "ガ", not "カ" and a loose sound mark.
            j = i + 1
            while j < len(text) and _is_mark(text[j]):
                j += 1
            for ch in fold(text[i:j]):
                chars.append(ch)
                starts.append(i)
                ends.append(j)
            i = j
        self.folded = "".join(chars)
        self._starts = starts
        self._ends = ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's span for folded [start, end)."""
        if self._starts is None or self._ends is None:
            return start, end
        return self._starts[start], self._ends[end - 1]


def _is_mark(ch: str) -> bool:
    """A character that may fold together with the one before it: a combining mark, a
    half-width sound mark, a conjoining hangul letter."""
    return bool(unicodedata.combining(ch)) or ch in "\uff9e\uff9f" or "\u1100" <= ch <= "\u11ff"


def _char_class(chars: list[str]) -> str:
    """A regular-expression class of `chars` (sorted), as ranges."""
    ranges: list[list[str]] = []
    for ch in chars:
        if ranges and ord(ranges[-1][1]) == ord(ch) - 1:
            ranges[-1][1] = ch
        else:
            ranges.append([ch, ch])
    return "".join(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}" for a, b in ranges)


@functools.cache
def _mark_or_astral() -> re.Pattern[str]:
    """The marks of the BMP (see `_is_mark`), and every character beyond the BMP (emoji, rare
    scripts: such text takes the careful path). One class of BMP ranges and a single range
    above is what `re` checks in constant time per character; listing the few marks beyond
    the BMP would make it a linear scan of some 200 ranges per character. Built on first use
    (about 10 ms), not when the module is imported."""
    marks = [chr(c) for c in range(0x300, 0x10000) if _is_mark(chr(c))]  # none below U+0300
    return re.compile("[" + _char_class(marks) + "\U00010000-\U0010ffff]")


def _occurrences(haystack: str, needle: str) -> list[tuple[int, int]]:
    found, start = [], haystack.find(needle)
    while needle and start >= 0:
        found.append((start, start + len(needle)))
        start = haystack.find(needle, start + len(needle))
    return found


def _cjk_pieces(haystack: str, term: str) -> list[tuple[int, int]]:
    """Where `haystack` holds pieces of `term` of two characters or more: every pair of
    adjacent Japanese characters of the term found (overlapping finds merge into one span),
    and the term's Latin words and numbers. Pairs of hiragana only are not marked for a term
    with kanji or katakana: in 「返品したい」 they are grammar (したい), which a text holds
    everywhere. Linear in the text, so a pasted paragraph costs no more than a word.

    Unsorted: `match_spans` sorts. One `str.find` pass per pair costs a tenth of a regular
    expression of all pairs, which tries each of them at every position."""
    pairs, words = _pieces_of(term)
    spans = []
    for pair in pairs:
        start = haystack.find(pair)
        while start >= 0:
            spans.append((start, start + 2))
            start = haystack.find(pair, start + 1)  # overlapping: "ああ" twice in "あああ"
    for word in words:
        spans.extend(_occurrences(haystack, word))
    return spans


@functools.lru_cache(maxsize=256)
def _pieces_of(term: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pairs = {
        term[i : i + 2] for i in range(len(term) - 1) if is_cjk(term[i]) and is_cjk(term[i + 1])
    }
    if not _HIRAGANA.fullmatch(term):
        pairs = {p for p in pairs if not _HIRAGANA.fullmatch(p)}
    return tuple(sorted(pairs)), tuple(_LATIN.findall(term))


def _similar_words(words: list[tuple[str, tuple[int, int]]], term: str) -> list[tuple[int, int]]:
    """The spans of `words` (each with its span) spelled nearly like `term`."""
    if len(term) < 3:
        return []
    slack = max(2, len(term) // 3)
    return [span for w, span in words if abs(len(w) - len(term)) <= slack and _is_similar(term, w)]


@functools.lru_cache(maxsize=16384)
def _is_similar(term: str, word: str) -> bool:
    """Whether `word` is spelled nearly like `term` (difflib ratio at least _FUZZY_RATIO).

    Cached: the hits of one search share most of their words, and so do the searches of a
    help center. The ratio is 2 * matches / total length, and a word has no more matches than
    letters that occur in the term: most words fail that count, which costs far less than a
    SequenceMatcher."""
    present = sum(1 for ch in word if ch in term)
    if 2.0 * present / (len(term) + len(word)) < _FUZZY_RATIO:  # difflib's own arithmetic
        return False
    matcher = SequenceMatcher(None, term, word, autojunk=False)
    return matcher.quick_ratio() >= _FUZZY_RATIO and matcher.ratio() >= _FUZZY_RATIO


def match_spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping spans of `text` (original indices) that match `terms`."""
    if not text or not terms:
        return []
    folded = _Folded(text)
    found: list[tuple[int, int]] = []
    words: list[tuple[str, tuple[int, int]]] | None = None  # split once, for all the terms
    for term in terms:
        spans = _occurrences(folded.folded, term)
        if not spans and any(is_cjk(ch) for ch in term):
            spans = _cjk_pieces(folded.folded, term)
        elif not spans:
            if words is None:
                words = [(m.group(), m.span()) for m in _WORD.finditer(folded.folded)]
            spans = _similar_words(words, term)
        found.extend(folded.span(s, e) for s, e in spans)
    return _merge(found)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _render(text: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
    out, pos = [], start
    for s, e in spans:
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        out.append(html.escape(_SPACE.sub(" ", text[pos:s])))
        out.append(f"<mark>{html.escape(_SPACE.sub(' ', text[s:e]))}</mark>")
        pos = e
    out.append(html.escape(_SPACE.sub(" ", text[pos:end])))
    return "".join(out)


def highlight(text: str, terms: list[str]) -> str:
    """All of `text`, escaped, with every match of `terms` marked (for titles)."""
    return _render(text, match_spans(text, terms), 0, len(text))


def snippet(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around its densest matches, escaped and marked;
    the beginning of the text when nothing matches. "…" shows where the text was cut."""
    text = text.strip()
    spans = match_spans(text, terms)
    start = _best_window(spans, len(text), width)
    end = min(len(text), start + width)
    start, end = _snap_to_words(text, start, end)
    lead = "…" if start > 0 else ""
    tail = "…" if end < len(text) else ""
    return lead + _render(text, spans, start, end).strip() + tail


def _best_window(spans: list[tuple[int, int]], length: int, width: int) -> int:
    """Where a `width` window covers most of `spans` (sorted, non-overlapping), starting a
    little before one of them; the first such place on a tie."""
    if not spans or length <= width:
        return 0
    context = width // 4
    starts = [s for s, _ in spans]
    ends = [e for _, e in spans]
    covered = [0]
    for s, e in spans:
        covered.append(covered[-1] + e - s)
    best_start, best_cover = 0, -1
    for anchor in starts:
        start = max(0, min(anchor - context, length - width))
        end = start + width
        first = bisect.bisect_right(ends, start)  # the first span ending after `start`
        last = bisect.bisect_left(starts, end) - 1  # the last span starting before `end`
        if first > last:
            continue
        cover = covered[last + 1] - covered[first]
        cover -= max(0, start - starts[first]) + max(0, ends[last] - end)
        if cover > best_cover:
            best_start, best_cover = start, cover
    return best_start


def _snap_to_words(text: str, start: int, end: int, reach: int = 15) -> tuple[int, int]:
    """Move cut points to spaces nearby so that no word is cut in half (Latin text; Japanese
    has no spaces and is cut anywhere)."""
    if start > 0 and not text[start - 1].isspace():
        space = text.find(" ", start, start + reach)
        if space >= 0:
            start = space + 1
    if end < len(text) and not text[end].isspace():
        space = text.rfind(" ", max(start, end - reach), end)
        if space > start:
            end = space
    return start, end


def marked_to_html(marked: str) -> str:
    """Backend output with START/STOP around matches (ts_headline, Elasticsearch with these
    as tags) as escaped HTML with <mark>."""
    escaped = html.escape(_SPACE.sub(" ", marked).strip())
    escaped = escaped.replace(START, "<mark>").replace(STOP, "</mark>")
    return re.sub(r"</mark>(\s*)<mark>", r"\1", escaped)


def elide(marked_html: str, plain_fragment: str, whole: str) -> str:
    """Add "…" where a backend's fragment (`plain_fragment`) does not reach the ends of the
    `whole` text."""
    fragment = _SPACE.sub(" ", plain_fragment).strip()
    if not fragment:
        return marked_html
    lead = "" if _collapsed_start(whole, 20).startswith(fragment[:20]) else "…"
    tail = "" if _collapsed_end(whole, 20).endswith(fragment[-20:]) else "…"
    return lead + marked_html + tail


def _collapsed_start(text: str, chars: int) -> str:
    """The first `chars` characters of `text` with whitespace collapsed and stripped (as
    `_SPACE.sub(" ", text).strip()` would give them), without collapsing a whole article:
    collapsing a prefix gives a prefix of the collapsed text."""
    k = 4 * chars
    while k < len(text):
        head = _SPACE.sub(" ", text[:k]).lstrip()
        if len(head) > chars:  # then stripping the far end cannot reach these characters
            return head[:chars]
        k *= 2
    return _SPACE.sub(" ", text).strip()[:chars]


def _collapsed_end(text: str, chars: int) -> str:
    """The last `chars` characters of `text` collapsed and stripped: `_collapsed_start` from
    the other end."""
    k = 4 * chars
    while k < len(text):
        tail = _SPACE.sub(" ", text[-k:]).rstrip()
        if len(tail) > chars:
            return tail[-chars:]
        k *= 2
    return _SPACE.sub(" ", text).strip()[-chars:]


__all__ = [
    "SNIPPET_CHARS",
    "START",
    "STOP",
    "elide",
    "fold",
    "highlight",
    "is_cjk",
    "marked_to_html",
    "match_spans",
    "query_terms",
    "snippet",
    "strip_sentinels",
    "words",
]
