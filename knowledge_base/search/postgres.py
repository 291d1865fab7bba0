"""Article search in PostgreSQL: the default backend, with nothing to run beside the database.

Customers type what they would say: 「返品したい」, "how do i change my plan", 「解約したらいくら
かかる」. Few articles hold every word of that, so a query is taken as a set of terms of which
any may match, and articles are ranked by how much of the query they hold: each term weighs by
its rarity (inverse document frequency), and a term in the title counts about twice one in
the body. docs/KB_SEARCH_QUALITY.md has the figures on tests/data/kb_eval.

Terms, each looked up in a GIN index on `kb_articles`:

- English articles: the query's English lexemes (stemmed, stop words dropped: "refunds" finds
  "refund") in `search_vector` (title A, body B);
- other (Japanese) articles: the overlapping pairs of characters of each run of Japanese in
  the query (「返品したい」: 返品, 品し, した, たい) and its Latin words, in `search_grams`
  (migration 0006), which holds the same of title and body. Pairs of hiragana only are
  dropped when the query has kanji or katakana: they are grammar (したい, です, について);
- misspelled words: a Latin word of the query that is not among the articles' common words
  also looks for the common words spelled nearly like it ("refnd": refund, "pasword":
  password), at a lower weight;
- a single Latin word: the titles holding it as a part ("authenti", pg_trgm `ILIKE`), and,
  if it is neither common nor near a common word, the titles with a near spelling of it
  (pg_trgm `title %> q`: how "pasword" is found before the table has statistics).

Rarity comes from the statistics ANALYZE (and autovacuum) keeps for the two term columns: the
share of rows holding each of their most common elements (`pg_stats.most_common_elems`,
up to 10,000 for `search_grams`); a term not listed is taken as half as common as the least
common listed one, as the planner does. The common Latin words among them are the word list
misspellings are corrected against. Without statistics every term weighs the same.

Ranking happens in SQL. `ts_rank` with the weights {D 0, C 0, B 0.5, A 1} scores a term in
the title about twice one in the body; the query's terms are grouped into up to `MAX_BANDS`
bands of similar rarity, each band one `ts_rank` call weighted by its rarity: a call unpacks
an article's term vector once, where a check per term would unpack it per term.

Only the first `CANDIDATES` matching articles are ranked, so a query of common words costs
about the same on 100,000 articles as on 100. They are looked up rarest terms first, in tiers
read one after the other only while the list is not full; terms so common that the rarer
ones are expected to fill it many times over are not looked up at all (they still count in
the ranking), as reading their posting lists would cost more than anything else. `total` is
the number of ranked candidates, so at most `CANDIDATES` (plus near-spelling and
partial-word matches).

Kana and kanji spellings of one word (へんきん, 返金) share no characters, so nothing here
matches one from the other.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError

from helpdesk.db import Database
from helpdesk.visibility import Scope
from knowledge_base.search import (
    ArticleDoc,
    EverythingHit,
    Filters,
    Hit,
    SearchResult,
)
from knowledge_base.search import highlight as hl

# Word-similarity thresholds (0..1) for the `%>` operator. Japanese runs are one "word" to
# pg_trgm, so a query missing a particle ("請求書再発行" against "請求書の再発行") shares
# only about 0.43 of its trigrams; Latin typos share more ("refnd"/"refund" 0.5,
# "pasword"/"password" 0.7) and a lower bar there lets unrelated words in.
LATIN_THRESHOLD = 0.45
CJK_THRESHOLD = 0.4
# pg_trgm finds no trigram in a substring pattern shorter than this, so ILIKE could only scan.
MIN_INDEXED_SUBSTRING = 3
MAX_GAPPED_CHARS = 16

# Ranking: a term's weight is ln(1 / share of articles holding it), at least MIN_IDF.
MIN_IDF = 0.1
DEFAULT_SHARE = 0.01  # assumed for every term when the table has no statistics yet
RANK_WEIGHTS = "{0, 0, 0.5, 1}"  # ts_rank's D, C, B (body), A (title)
MAX_BANDS = 2
SIMILARITY_WEIGHT = 0.5  # times word_similarity(query, title), for titles past the threshold
SUBSTRING_WEIGHT = 0.5  # a one-word entry found in the title as part of a longer word
# Candidates: how many articles are ranked at most; the matches the terms up to the end of each
# tier are expected to have (terms past the last bound only rank, they are not looked up:
# a common term's posting list is long to read, and rarer ones found enough); and how many
# terms, rarest first, are looked up at most.
CANDIDATES = 200
EXTRA_CANDIDATES = 100  # near-spelling and partial-word matches, each
MAX_EVERY_TERMS = 4  # articles with all of the rarest few terms are candidates first
TIER_ROWS = (800, 3200, 12800)
MAX_CANDIDATE_TERMS = 24
MAX_QUERY_TERMS = 64
# Spelling: in an entry of at most MAX_CORRECTED_ENTRY_WORDS Latin words, a word of at least
# MIN_CORRECTED_CHARS letters that is not among the articles' common words (the term
# statistics) also looks for up to MAX_CORRECTIONS common words this close to it (difflib
# ratio), each weighing CORRECTION_WEIGHT of a typed term.
MIN_CORRECTED_CHARS = 4
MAX_CORRECTED_ENTRY_WORDS = 5
MAX_CORRECTIONS = 2
CORRECTION_RATIO = 0.8
CORRECTION_WEIGHT = 0.7
STATS_TTL = 300.0  # seconds the term statistics are reused
MAX_REMEMBERED_CORRECTIONS = 10_000  # misspelled words whose corrections are kept until then

HEADLINE_OPTIONS = f"StartSel={hl.START}, StopSel={hl.STOP}, MaxWords=28, MinWords=12, ShortWord=2"
TITLE_HEADLINE_OPTIONS = f"StartSel={hl.START}, StopSel={hl.STOP}, HighlightAll=true"

# The characters `kb_search_terms` (migration 0006) takes as Japanese: 々〆, hiragana,
# katakana with ー, CJK ideographs (with extension A and the compatibility block), hangul.
_CJK_RUN = re.compile(
    "[\u3005\u3006\u3041-\u3096\u309d\u309e\u30a1-\u30fa\u30fc-\u30ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+"
)
_LATIN_WORD = re.compile(r"[0-9a-z]+(?:-[0-9a-z]+)*")
MAX_TERM_CHARS = 64
_HIRAGANA = re.compile("[\u3041-\u309f]+")
_WORD_TO_CORRECT = re.compile("[a-z]+")


def search_terms(value: str) -> list[str]:
    """The terms `kb_search_terms` (migration 0006) makes of a text, in order: NFKC and lower
    case; every two adjacent characters of each run of Japanese (a run of one character as
    it is); Latin words and numbers, a hyphenated one also as its parts and joined up
    ("wi-fi": wi, fi, wifi); none longer than `MAX_TERM_CHARS`."""
    folded = unicodedata.normalize("NFKC", value or "").lower()
    terms: dict[str, None] = {}
    for run in _CJK_RUN.findall(folded):
        if len(run) == 1:
            terms[run] = None
        for i in range(len(run) - 1):
            terms[run[i : i + 2]] = None
    for word in _LATIN_WORD.findall(folded):
        parts = word.split("-")
        for part in [*parts, "".join(parts)]:
            terms[part] = None
    return [t for t in terms if len(t) <= MAX_TERM_CHARS]


def query_grams(value: str) -> list[str]:
    """The terms of a query to look up in `search_grams`: its `search_terms`, without those of
    hiragana only when it has kanji or katakana ones, and without single Latin letters or
    digits. Hiragana there is grammar: 「返品したい」 is about 返品, not したい, and
    「プランを変更するには」 not about するには. A query of hiragana only (「つながらない」)
    keeps them all."""
    terms = search_terms(value)
    content = [t for t in terms if not _HIRAGANA.fullmatch(t)]
    if any(_CJK_RUN.fullmatch(t) for t in content):
        terms = content
    # a lone letter or digit ("f" of an unfinished "Wi-F") is in most articles
    return [t for t in terms if len(t) > 1 or _CJK_RUN.fullmatch(t)] or terms


@dataclass(frozen=True)
class _Query:
    """A search box entry prepared for SQL."""

    text: str  # NFKC, whitespace collapsed
    wanted: str  # the words to look for: `text` without quotes, `or` and excluded words
    excluded: list[str]  # "-word": articles holding one of these are left out
    terms: list[str]  # for marking matches, see highlight.py
    patterns: list[str]  # ILIKE patterns, any of which matches; [] when none is worth it
    threshold: float
    grams: list[str]  # terms for search_grams
    is_cjk: bool
    corrections: list[str] = field(default_factory=list)  # for misspelled words, see TermStats

    def corrected(self, stats: TermStats) -> _Query:
        """This query with the spelling corrections the statistics suggest, for an entry of
        a few words (in a sentence the other words find the article, and each unknown word
        costs a pass over the word list)."""
        words = [t for t in self.grams if _WORD_TO_CORRECT.fullmatch(t)]
        if len(words) > MAX_CORRECTED_ENTRY_WORDS:
            return self
        found: dict[str, None] = {}
        for word in words:
            found.update((w, None) for w in stats.corrections(word) if w not in self.grams)
        return replace(self, corrections=list(found))

    @classmethod
    def parse(cls, raw: str) -> _Query | None:
        """None for an entry with nothing to look for: blank, or only excluded words
        ("-refund" alone would otherwise list every article without that word)."""
        value = " ".join(unicodedata.normalize("NFKC", raw or "").split())
        if not hl.query_terms(value):
            return None
        # Web-search syntax, as far as a set of terms can follow it: quotes are dropped (a
        # phrase is its words), `or` is what every query does anyway, `-word` excludes.
        words = value.replace('"', " ").split()
        wanted = " ".join(w for w in words if not w.startswith("-") and w.lower() != "or")
        is_cjk = any(hl.is_cjk(ch) for ch in wanted)
        return cls(
            text=value,
            wanted=wanted,
            excluded=[w[1:] for w in words if w.startswith("-") and len(w) > 1],
            terms=hl.query_terms(value),
            patterns=[] if is_cjk else like_patterns(wanted),
            threshold=CJK_THRESHOLD if is_cjk else LATIN_THRESHOLD,
            grams=query_grams(wanted),
            is_cjk=is_cjk,
        )


def like_patterns(query: str) -> list[str]:
    """ILIKE patterns for a query, any of which matches: its words in order, anything
    between them. Quotes are dropped; excluded words (`-word`) and `or` are left out.

    A Japanese query is often a run of words a text writes with a particle between them
    ("請求書再発行" for "請求書の再発行"), so a single run of four characters or more is also
    tried with one gap at each place inside it that leaves two characters on either side.
    Latin queries shorter than three characters get no pattern (pg_trgm cannot index it and
    the words match anyway); Japanese ones do, as "返金" is a whole word.
    """
    value = unicodedata.normalize("NFKC", query or "").replace('"', " ")
    words = [w for w in value.split() if not w.startswith("-") and w.lower() != "or"]
    is_cjk = any(hl.is_cjk(ch) for ch in value)
    if not words or (not is_cjk and len("".join(words)) < MIN_INDEXED_SUBSTRING):
        return []
    escaped = [_escape_like(w) for w in words]
    if is_cjk and len(words) == 1 and 4 <= len(words[0]) <= MAX_GAPPED_CHARS:
        word = words[0]
        return [
            f"%{_escape_like(word[:k])}%{_escape_like(word[k:])}%" for k in range(2, len(word) - 1)
        ]
    return ["%" + "%".join(escaped) + "%"]


def like_operator(patterns: list[str]) -> str:
    """LIKE when no pattern has letters with case (Japanese, digits): it matches the same as
    ILIKE but does not case-fold every row, which halves a scan's cost."""
    caseless = all(p.lower() == p.upper() for p in patterns)
    return "LIKE" if caseless else "ILIKE"


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")


def _tsquery_or(terms: Sequence[str]) -> str:
    """tsquery text matching any of `terms`, each taken as one lexeme as it is."""
    quoted = ("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in terms)
    return " | ".join(quoted)


# -- term statistics -------------------------------------------------------------------------

_STATS_SQL = """
SELECT c.reltuples, s.attname,
       s.most_common_elems::text::text[] AS elems, s.most_common_elem_freqs AS freqs
FROM pg_class c
LEFT JOIN pg_stats s
       ON s.schemaname = current_schema() AND s.tablename = 'kb_articles'
      AND s.attname IN ('search_grams', 'search_vector')
WHERE c.oid = to_regclass('kb_articles')
"""


@dataclass
class TermStats:
    """How common each term is, as a share of the table's rows, per term column; and the
    common Latin words, to correct misspelled ones against."""

    rows: float = 0.0  # 0 when unknown (never analyzed)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)  # share of an unlisted term
    words_by_length: dict[int, list[str]] = field(default_factory=dict)
    # the same words with the letters of each as a bit mask (see `_near`), and the answers of
    # `corrections` so far: the statistics are reloaded every STATS_TTL seconds, and so are these
    _lettered: dict[int, list[tuple[int, str]]] = field(default_factory=dict, repr=False)
    _corrected: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def share(self, column: str, term: str) -> float:
        listed = self.shares.get(column)
        if not listed:
            return DEFAULT_SHARE
        return listed.get(term, self.floor[column])

    def idf(self, column: str, term: str) -> float:
        return max(MIN_IDF, math.log(1.0 / max(self.share(column, term), 1e-9)))

    def known(self, word: str) -> bool:
        """Whether `word` is among the common terms of the articles."""
        return word in self.shares.get("search_grams", {})

    def corrections(self, word: str) -> list[str]:
        """Common words of the articles spelled nearly like `word` ("refnd": refund), for a
        word that is not itself common; [] for a known word, a short one, or no statistics."""
        if len(word) < MIN_CORRECTED_CHARS or self.known(word):
            return []
        found = self._corrected.get(word)
        if found is None:
            found = difflib.get_close_matches(
                word, self._near(word), n=MAX_CORRECTIONS, cutoff=CORRECTION_RATIO
            )
            if len(self._corrected) < MAX_REMEMBERED_CORRECTIONS:
                self._corrected[word] = found
        return list(found)

    def _near(self, word: str) -> list[str]:
        """The common words that may be within CORRECTION_RATIO of `word`, in list order.

        difflib's ratio is 2 * matches / the two lengths, and a word cannot match more of its
        letters than it has of the other's: each letter of a candidate that `word` lacks is
        at least one position that cannot match. Comparing letter masks rules out most of a
        word list of thousands for the cost of an AND each, where difflib's own quick checks
        build a character count per candidate (about a millisecond per misspelled word).
        Only words that cannot pass are left out, so the corrections are the same."""
        if not self._lettered:
            self._lettered = {
                length: [(_letter_mask(w), w) for w in words]
                for length, words in self.words_by_length.items()
            }
        mask = _letter_mask(word)
        near = []
        for length in range(len(word) - 2, len(word) + 3):
            total = length + len(word)
            for letters, candidate in self._lettered.get(length, ()):
                matches = min(
                    length - (letters & ~mask).bit_count(),
                    len(word) - (mask & ~letters).bit_count(),
                )
                if 2.0 * matches / total >= CORRECTION_RATIO:  # difflib's own arithmetic
                    near.append(candidate)
        return near

    @classmethod
    async def load(cls, db: asyncpg.Connection) -> TermStats:
        stats = cls()
        for row in await db.fetch(_STATS_SQL):
            stats.rows = max(0.0, float(row["reltuples"] or 0))
            if row["attname"] is None or not row["elems"] or not row["freqs"]:
                continue
            elems, freqs = list(row["elems"]), list(row["freqs"])
            # for element statistics the frequencies end with the lowest and highest one
            stats.shares[row["attname"]] = dict(zip(elems, freqs[: len(elems)], strict=False))
            lowest = freqs[len(elems)] if len(freqs) > len(elems) else min(freqs)
            stats.floor[row["attname"]] = lowest / 2
        for term in sorted(stats.shares.get("search_grams", {})):
            if _WORD_TO_CORRECT.fullmatch(term):
                stats.words_by_length.setdefault(len(term), []).append(term)
        return stats


def _letter_mask(word: str) -> int:
    """The letters of `word` as bits (any character maps to some bit: two sharing one only
    make `TermStats._near` keep more candidates)."""
    mask = 0
    for ch in word:
        mask |= 1 << (ord(ch) & 63)
    return mask


@dataclass(frozen=True)
class _Side:
    """One term column's part of a search: the ranking bands and the candidate tiers."""

    column: str
    bands: list[tuple[str, float]]  # (tsquery text, coefficient of its ts_rank)
    every: list[str]  # terms an article holding all of is a candidate first; [] for none
    tiers: list[list[str]]  # terms, rarest first, cut where the expected matches pass a bound

    @classmethod
    def plan(
        cls, column: str, terms: Sequence[str], stats: TermStats, corrected: Sequence[str] = ()
    ) -> _Side | None:
        """`terms` as typed, `corrected` as spelling corrections of some (weighing less)."""
        weights = {t: stats.idf(column, t) for t in terms}
        for t in corrected:
            weights.setdefault(t, CORRECTION_WEIGHT * stats.idf(column, t))
        if not weights:
            return None
        weighted = sorted(weights.items(), key=lambda x: (-x[1], x[0]))
        weighted = weighted[:MAX_QUERY_TERMS]  # a pasted page ranks by its rarest terms
        total = sum(w for _, w in weighted)
        bands = [
            # ts_rank averages over the band's terms: times their number gives their sum
            (_tsquery_or([t for t, _ in band]), sum(w for _, w in band) / total)
            for band in _split_bands(weighted, MAX_BANDS)
        ]
        # Candidates come from the rarest terms, but a pair of kana and kanji (に機, 更し) is
        # rare mostly for straddling two words: pairs within a word go first.
        lookup = sorted(weighted, key=lambda x: (_straddles(x[0]), -x[1], x[0]))
        tiers: list[list[str]] = [[]]
        expected = 0.0
        for term, _ in lookup[:MAX_CANDIDATE_TERMS]:
            matches = stats.share(column, term) * stats.rows
            if expected and expected + matches > TIER_ROWS[-1]:
                continue  # too common to look up once others were: it only ranks
            tiers[-1].append(term)
            expected += matches
            if stats.rows > 0 and expected >= TIER_ROWS[len(tiers) - 1]:
                if len(tiers) == len(TIER_ROWS):
                    break  # enough to fill the list many times over; the rest only rank
                tiers.append([])
        typed = [t for t, _ in lookup if t in terms and not _straddles(t)]
        every = typed[:MAX_EVERY_TERMS] if len(typed) > 1 else []
        return cls(column, bands, every, [t for t in tiers if t])


def _straddles(term: str) -> bool:
    """A pair of hiragana and another kind of Japanese character (に機, 払い)."""
    hiragana = sum(1 for ch in term if "\u3041" <= ch <= "\u309f")
    return 0 < hiragana < len(term)


def _split_bands(weighted: list[tuple[str, float]], most: int) -> list[list[tuple[str, float]]]:
    """`weighted` (sorted by weight, highest first) cut into at most `most` runs, at the
    widest gaps between neighbouring weights."""
    if len(weighted) <= 1:
        return [weighted] if weighted else []
    gaps = sorted(
        range(1, len(weighted)),
        key=lambda i: (-(weighted[i - 1][1] - weighted[i][1]), i),
    )
    cuts = sorted(i for i in gaps[: most - 1] if weighted[i - 1][1] > weighted[i][1])
    bands, start = [], 0
    for cut in [*cuts, len(weighted)]:
        bands.append(weighted[start:cut])
        start = cut
    return bands


# -- SQL -------------------------------------------------------------------------------------

_CATEGORY_SUBTREE = """
    a.category_id IN (
        WITH RECURSIVE subtree(id) AS (
            SELECT id FROM kb_categories WHERE id = :category_id
            UNION
            SELECT c.id FROM kb_categories c JOIN subtree s ON c.parent_id = s.id
        )
        SELECT id FROM subtree
    )"""


def _filter_sql(filters: Filters, params: dict[str, Any]) -> str:
    clauses = ["a.status = ANY(:statuses)", "a.visibility = ANY(:visibilities)"]
    params["statuses"] = list(filters.status)
    params["visibilities"] = list(filters.visibility)
    if filters.language is not None:
        clauses.append("a.language = :language")
        params["language"] = filters.language
    if filters.category_id is not None:
        clauses.append(_CATEGORY_SUBTREE)
        params["category_id"] = filters.category_id
    return " AND ".join(clauses)


@dataclass
class _Plan:
    """The SQL of one search and its parameters."""

    params: dict[str, Any]
    tiers: list[str]  # conditions on the term columns, rarest terms first
    similar: bool  # near spellings of the query in titles are candidates
    substring: list[str]  # conditions for the query's words in order; [] for none
    rank: str  # the terms' score
    headline_query: str | None  # tsquery text for ts_headline of English articles

    @classmethod
    def make(
        cls,
        query: _Query,
        filters: Filters,
        stats: TermStats,
        lexemes: Lexemes,
        params: dict[str, Any],
    ) -> _Plan:
        # English articles rank by their English lexemes, the others by character pairs.
        words = grams = None
        if filters.language != "ja":
            words = _Side.plan("search_vector", lexemes.typed, stats, lexemes.corrected)
        if filters.language != "en":
            grams = _Side.plan("search_grams", query.grams, stats, query.corrections)
        tiers: list[list[str]] = [[] for _ in range(len(TIER_ROWS) + 2)]
        ranks = {}
        for side, key in ((words, "w"), (grams, "g")):
            if side is None:
                continue
            calls = []
            for i, (tsquery, coefficient) in enumerate(side.bands):
                params[f"{key}b{i}"] = tsquery
                params[f"{key}c{i}"] = coefficient
                calls.append(
                    f"CAST(:{key}c{i} AS float8) * ts_rank('{RANK_WEIGHTS}', a.{side.column}, "
                    f"CAST(:{key}b{i} AS tsquery))"
                )
            ranks[key] = " + ".join(calls)
            if side.every:
                params[f"{key}all"] = " & ".join(_tsquery_or([t]) for t in side.every)
                tiers[0].append(f"a.{side.column} @@ CAST(:{key}all AS tsquery)")
            for i, terms in enumerate(side.tiers, 1):
                params[f"{key}t{i}"] = _tsquery_or(terms)
                tiers[i].append(f"a.{side.column} @@ CAST(:{key}t{i} AS tsquery)")
        rank = (
            f"CASE WHEN a.language = 'en' THEN {ranks.get('w', '0')} ELSE {ranks.get('g', '0')} END"
        )
        # Near spellings of titles, for a single Latin word that is neither common nor near
        # a common word: "pasword" before the articles have statistics, a misspelled rare
        # word. (Japanese ones are the pairs' business.)
        single = _single_word(query)
        similar = (
            single is not None
            and len(single) >= MIN_CORRECTED_CHARS
            and _WORD_TO_CORRECT.fullmatch(single) is not None
            and not stats.known(single)
            and not query.corrections
        )
        if similar:
            params["threshold"] = query.threshold
            params["similarity_weight"] = SIMILARITY_WEIGHT
        substring: list[str] = []
        if query.patterns and single is not None:
            # One word typed may be the start of a longer one ("authenti"); titles only, as
            # a short pattern's trigrams are in most bodies, each to be read and checked.
            params["patterns"] = query.patterns
            params["substring_weight"] = SUBSTRING_WEIGHT
            substring = [f"a.title {like_operator(query.patterns)} ANY(:patterns)"]
        every = [*lexemes.typed, *lexemes.corrected]
        headline_query = _tsquery_or(every) if every else None
        conditions = ["(" + " OR ".join(t) + ")" for t in tiers if t]
        return cls(params, conditions, similar, substring, rank, headline_query)

    @property
    def empty(self) -> bool:
        return not (self.tiers or self.similar or self.substring)

    def candidates_sql(self, filters_sql: str) -> str:
        """CTEs ending in `candidates`: the articles to rank, each with its terms' score
        (`rank`) and what near spelling and partial words add to it.

        Each CTE is planned on its own (materialized, and read only as far as needed), so a
        LIMIT does not tempt the planner into scanning the table for "the first few" matches,
        and a tier of terms is read only when the ones before it ran out before the limit.
        The terms' score is computed as a match is read, while its row is at hand. Trigram
        matches have CTEs of their own: their rows need a recheck, which in a shared bitmap
        would re-evaluate every condition. The filters are checked on each match, not
        through the listing index: they pass most articles, and ANDing that index's bitmap
        (half the table) costs more than the check.
        """
        ctes, sources = [], []
        for i, condition in enumerate(self.tiers, 1):
            ctes.append(_fenced(f"tier{i}", condition, filters_sql, self.rank))
        if self.tiers:
            tiers = " UNION ALL ".join(
                f"SELECT id, rank FROM tier{i}" for i in range(1, len(self.tiers) + 1)
            )
            sources.append(
                "SELECT id, rank, NULL::float8 AS similarity, NULL::boolean AS in_title"
                f" FROM ({tiers}) AS t LIMIT :candidates"
            )
        if self.similar:
            ctes += [
                _fenced("near_rows", "a.title %> :q", filters_sql, self.rank, "a.title"),
                "near AS MATERIALIZED (SELECT id, rank, word_similarity(:q, title) AS similarity"
                " FROM near_rows LIMIT :extras)",
            ]
            sources.append("SELECT id, rank, similarity, NULL::boolean AS in_title FROM near")
        if self.substring:
            condition = "(" + " OR ".join(self.substring) + ")"
            in_title = f"{self.substring[0]} AS in_title"
            ctes += [
                _fenced("partial_rows", condition, filters_sql, self.rank, in_title),
                "partial AS MATERIALIZED (SELECT id, rank, in_title FROM partial_rows"
                " LIMIT :extras)",
            ]
            sources.append("SELECT id, rank, NULL::float8 AS similarity, in_title FROM partial")
        union = " UNION ALL ".join(f"({source})" for source in sources)
        ctes.append(
            "candidates AS MATERIALIZED (SELECT id, max(rank) AS rank,"
            " max(similarity) AS similarity, bool_or(in_title) AS in_title"
            f" FROM ({union}) AS found GROUP BY id)"
        )
        return "WITH " + ",\n".join(ctes)

    def score_sql(self) -> str:
        """The score of a candidate (`c`)."""
        score = ["c.rank"]
        if self.similar:
            score.append(
                "CASE WHEN c.similarity >= CAST(:threshold AS float8) "
                "THEN CAST(:similarity_weight AS float8) * c.similarity ELSE 0 END"
            )
        if self.substring:
            score.append("CASE WHEN c.in_title THEN CAST(:substring_weight AS float8) ELSE 0 END")
        return " + ".join(score)


def _fenced(name: str, condition: str, filters_sql: str, rank: str, extra: str = "") -> str:
    """A materialized CTE of the articles matching `condition` that pass the filters, with
    their `rank`. The filters are checked on each row (OFFSET 0 keeps them out of the index
    scan). `extra` adds a column: "a.<column>" or "<expression> AS <name>"."""
    inner = (
        "a.id, a.status, a.visibility, a.language, a.category_id, a.search_vector, a.search_grams"
    )
    outer = f"a.id, {rank} AS rank"
    if extra:
        name_of_extra = extra.rsplit(" AS ", 1)[1] if " AS " in extra else extra.split(".")[1]
        inner += f", {extra}"
        outer += f", a.{name_of_extra}"
    return (
        f"{name} AS MATERIALIZED (SELECT {outer} FROM (SELECT {inner} FROM kb_articles a"
        f" WHERE {condition} OFFSET 0) AS a WHERE {filters_sql})"
    )


# The page's rows, then headlines for those rows only: ts_headline re-parses the text.
_SEARCH_SQL = """
{candidates},
ranked AS (
    SELECT c.id, {score} AS score, count(*) OVER () AS total
    FROM candidates c
    ORDER BY score DESC, c.id
    LIMIT :limit OFFSET :offset
)
SELECT r.id, r.score, r.total, a.language, a.slug, a.title, a.body_text, a.category_id,
       a.visibility, title_headline, body_headline
FROM ranked r
JOIN kb_articles a ON a.id = r.id
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN a.language = 'en' AND ts_filter(a.search_vector, '{{a}}') @@ {tsquery}
            THEN ts_headline('english', translate(a.title, :sentinels, ''), {tsquery},
                             :title_options) END AS title_headline,
        CASE WHEN a.language = 'en' AND ts_filter(a.search_vector, '{{b}}') @@ {tsquery}
            THEN ts_headline('english', translate(a.body_text, :sentinels, ''), {tsquery},
                             :body_options) END AS body_headline
) h
ORDER BY r.score DESC, r.id
"""

_COUNT_SQL = "{candidates}\nSELECT count(*) FROM candidates"

# Every typed word must start a title word (weight A); the last one may be unfinished.
_PREFIX_TSQUERY = "(to_tsquery('english', :prefix_text) || to_tsquery('simple', :prefix_text))"
# Typing "sa" matches tens of thousands of titles in a large knowledge base; scoring every one
# to keep five took a second at 100k articles (bench/kb_search.py). The inner LIMIT stops the
# index-driven scan at SUGGEST_CANDIDATES matches, and only those are scored: as-you-type
# suggestions need to be instant and plausible, and the next keystroke narrows them anyway.
SUGGEST_CANDIDATES = 200
_SUGGEST_SQL = """
SELECT a.id, a.language, a.slug, a.title, left(a.body_text, 400) AS body_start,
       a.category_id, a.visibility,
       CASE WHEN a.title ILIKE :starts THEN 1.0 ELSE 0 END
       + CASE WHEN a.search_vector @@ {prefix_query} THEN 0.5 ELSE 0 END
       + word_similarity(:q, a.title) AS score
FROM (
    SELECT a.id
    FROM kb_articles a
    WHERE {filters}
      AND (a.search_vector @@ {prefix_query} OR a.title %> :q {contains})
    LIMIT %(candidates)d
) c
JOIN kb_articles a ON a.id = c.id
ORDER BY score DESC, a.id
LIMIT :limit
""".replace("%(candidates)d", str(SUGGEST_CANDIDATES))


class PostgresSearch:
    """Search over `kb_articles` itself.

    `index` and `delete` do nothing: `search_vector` and `search_grams` are generated columns
    and the trigram indexes cover the article's own columns, so PostgreSQL updates them in the
    same transaction that saves the article. A saved article is findable the moment it
    commits, and a rolled-back save never is.
    """

    name = "postgres"

    def __init__(self, database: Database, *, region: str = "JP") -> None:
        self.database = database
        self.region = region
        self._stats: TermStats | None = None
        self._stats_at = 0.0

    async def index(self, docs: Sequence[ArticleDoc]) -> None:
        """Nothing to do: the article's row is its own index entry (see the class)."""

    async def delete(self, article_ids: Sequence[int]) -> None:
        """Nothing to do: deleting the row deletes its index entries."""

    async def reindex(
        self,
        docs: AsyncIterator[ArticleDoc],
        *,
        total: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Count the articles: the indexes are never stale, so there is nothing to rebuild."""
        count = 0
        async for _ in docs:
            count += 1
            if progress is not None and count % 100 == 0:
                progress(count)
        if progress is not None:
            progress(count)
        return count

    async def term_stats(self, db: asyncpg.Connection) -> TermStats:
        """The term statistics, read again after `STATS_TTL` seconds (ANALYZE renews them)."""
        now = time.monotonic()
        if self._stats is None or now - self._stats_at > STATS_TTL:
            self._stats = await TermStats.load(db)
            self._stats_at = now
        return self._stats

    async def search(
        self, query: str, filters: Filters = Filters(), *, limit: int = 10, offset: int = 0
    ) -> SearchResult:
        parsed = _Query.parse(query)
        if parsed is None or limit <= 0:
            return SearchResult([], 0)
        params: dict[str, Any] = {
            "q": parsed.wanted,
            "limit": limit,
            "offset": max(0, offset),
            "candidates": CANDIDATES,
            "extras": EXTRA_CANDIDATES,
            "sentinels": hl.START + hl.STOP,
            "title_options": TITLE_HEADLINE_OPTIONS,
            "body_options": HEADLINE_OPTIONS,
        }
        async with _search_transaction(self.database, parsed.threshold) as db:
            stats = await self.term_stats(db)
            parsed = parsed.corrected(stats)
            # Japanese articles rank by character pairs alone: no English lexemes to look up.
            lexemes = Lexemes() if filters.language == "ja" else await _lexemes(db, parsed)
            filters_sql = _filter_sql(filters, params) + _excluded_sql(parsed, params)
            plan = _Plan.make(parsed, filters, stats, lexemes, params)
            if plan.empty:
                return SearchResult([], 0)
            candidates = plan.candidates_sql(filters_sql)
            if plan.headline_query is not None:
                params["headline_query"] = plan.headline_query
                tsquery = "CAST(:headline_query AS tsquery)"
            else:
                tsquery = "NULL::tsquery"
            sql = _SEARCH_SQL.format(candidates=candidates, score=plan.score_sql(), tsquery=tsquery)
            rows = await db.fetch(*_numbered(sql, params))
            if rows:
                total = int(rows[0]["total"])
            elif offset > 0:  # past the end: the window count saw no row to ride on
                count_sql = _COUNT_SQL.format(candidates=candidates)
                total = int(await db.fetchval(*_numbered(count_sql, params)) or 0)
            else:
                total = 0
        return SearchResult([_hit(row, parsed.terms) for row in rows], total)

    async def suggest(
        self, prefix: str, filters: Filters = Filters(), *, limit: int = 5
    ) -> list[Hit]:
        """Titles for text being typed: its last word may be unfinished ("reset passw").

        Matches titles whose words start with the typed words (the tsvector with prefix
        search), near spellings of the whole entry, and, from three characters on, the entry
        anywhere in the title (Japanese). Shorter Japanese entries only match from the start of
        a run of characters, since a shorter substring would need a table scan per keystroke.
        """
        parsed = _Query.parse(prefix)
        if parsed is None or limit <= 0:
            return []
        typed = hl.words(parsed.text)
        if not typed:
            return []
        # \w+ words hold no quote or operator, so they are safe inside to_tsquery's syntax.
        prefix_text = " & ".join([f"'{w}':A" for w in typed[:-1]] + [f"'{typed[-1]}':*A"])
        params: dict[str, Any] = {
            "q": parsed.text,
            "prefix_text": prefix_text,
            "starts": _escape_like(parsed.text) + "%",
            "limit": limit,
        }
        contains = ""
        if len(parsed.text) >= MIN_INDEXED_SUBSTRING:
            params["contains"] = "%" + _escape_like(parsed.text) + "%"
            contains = f"OR a.title {like_operator([params['contains']])} :contains"
        sql = _SUGGEST_SQL.format(
            filters=_filter_sql(filters, params), contains=contains, prefix_query=_PREFIX_TSQUERY
        )
        terms = hl.query_terms(parsed.text)
        async with _search_transaction(self.database, parsed.threshold) as db:
            rows = await db.fetch(*_numbered(sql, params))
        return [
            Hit(
                article_id=row["id"],
                language=row["language"],
                slug=row["slug"],
                title=row["title"],
                title_html=hl.highlight(row["title"], terms),
                snippet_html=hl.snippet(row["body_start"], [], width=120),
                score=float(row["score"]),
                category_id=row["category_id"],
                visibility=row["visibility"],
            )
            for row in rows
        ]

    async def search_everything(
        self, query: str, *, limit: int = 20, scope: Scope | None = None
    ) -> list[EverythingHit]:
        from knowledge_base.search.everything import search_everything

        return await search_everything(
            self.database, self, query, limit=limit, region=self.region, scope=scope
        )

    async def close(self) -> None:
        """Nothing to close: the database belongs to the app."""


@dataclass(frozen=True)
class Lexemes:
    """The English lexemes of a query (stemmed, without stop words), and of its spelling
    corrections."""

    typed: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)


@asynccontextmanager
async def _search_transaction(
    database: Database, threshold: float
) -> AsyncIterator[asyncpg.Connection]:
    """A read-only transaction on one of the app's pooled connections, set up for search and
    spoken to through the driver (asyncpg) itself.

    The settings hold for this transaction only. asyncpg prepares statements, and a generic
    plan cannot know whether a pattern is selective enough for the trigram index: plan per
    query. And no sequential scans: for a tier of common terms the planner would read the
    table "until enough rows matched", checking each row's term vector, which is cheap only
    while its estimate holds; an index scan costs what the terms' posting lists cost,
    whatever the estimate. `threshold` is the `%>` operator's (pg_trgm).

    Why the driver: the planner reads its settings before a statement starts, so they cannot
    ride in the query's own statement, and through SQLAlchemy BEGIN, the statement setting
    them and COMMIT are a round trip each. Here BEGIN and the settings are one (a simple
    query may hold several statements), and rows come back without SQLAlchemy's work per
    statement and row: about 1 ms of CPU and latency per search (bench/kb_search.py).

    On failure it does what SQLAlchemy would: a driver error is raised as a `DBAPIError` (the
    app answers an outage with 503, whatever the query), and a connection whose statement
    failed or was cancelled is discarded (the server rolls back) instead of going back to
    the pool inside this transaction.
    """
    async with database.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        db: asyncpg.Connection = raw.driver_connection
        try:
            await db.execute(
                "BEGIN READ ONLY; SET LOCAL plan_cache_mode = force_custom_plan;"
                " SET LOCAL enable_seqscan = off;"
                f" SET LOCAL pg_trgm.word_similarity_threshold = {float(threshold)}"
            )
            yield db
            await db.execute("COMMIT")
        except BaseException as exc:
            await conn.invalidate()
            if isinstance(
                exc, asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError
            ):
                raise DBAPIError(None, None, exc) from exc
            raise


# SQLAlchemy's `text()` parameters (":name", not "::type"), numbered for the driver.
_NAMED_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def _numbered(sql: str, params: Mapping[str, Any]) -> list[Any]:
    """`sql` with its `:name` parameters as `$1`, `$2`..., followed by their values: the
    arguments of asyncpg's `fetch`. The SQL is written with names, as elsewhere in the app."""
    numbered, names = _numbering(sql)
    return [numbered, *(params[name] for name in names)]


@functools.lru_cache(maxsize=256)
def _numbering(sql: str) -> tuple[str, tuple[str, ...]]:
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match.group(1), len(names) + 1)}"

    return _NAMED_PARAMETER.sub(number, sql), tuple(names)


async def _lexemes(db: asyncpg.Connection, query: _Query) -> Lexemes:
    """The English lexemes of the query and of its spelling corrections (PostgreSQL's
    `english` configuration: stemmed, without stop words)."""
    row = await db.fetchrow(
        "SELECT tsvector_to_array(to_tsvector('english', $1)) AS typed,"
        " tsvector_to_array(to_tsvector('english', $2)) AS corrected",
        query.wanted,
        " ".join(query.corrections),
    )
    typed = list(row["typed"] or []) if row else []
    corrected = list(row["corrected"] or []) if row else []
    return Lexemes(typed, [c for c in corrected if c not in typed])


def _single_word(query: _Query) -> str | None:
    """The word of a one-word Latin entry, folded; None for any other entry."""
    if query.is_cjk:
        return None
    words = _LATIN_WORD.findall(unicodedata.normalize("NFKC", query.wanted).lower())
    return words[0] if len(words) == 1 and len(query.wanted.split()) == 1 else None


def _excluded_sql(query: _Query, params: dict[str, Any]) -> str:
    """The condition leaving out articles with an excluded word ("-card"), or ""."""
    if not query.excluded:
        return ""
    params["excluded"] = " or ".join(query.excluded)
    condition = "a.search_vector @@ websearch_to_tsquery('english', :excluded)"
    grams = search_terms(" ".join(query.excluded))
    if grams:
        params["excluded_grams"] = _tsquery_or(grams)
        condition += " OR a.search_grams @@ CAST(:excluded_grams AS tsquery)"
    return f" AND NOT ({condition})"


def _hit(row: Mapping[str, Any], terms: list[str]) -> Hit:
    """A row of `_SEARCH_SQL` as a hit: English articles come with ts_headline's marks (which
    know stemming: "refunds" marks "refund"); the others are marked by highlight.py."""
    title_headline, body_headline = row["title_headline"], row["body_headline"]
    if title_headline and hl.START in title_headline:
        title_html = hl.marked_to_html(title_headline)
    else:
        title_html = hl.highlight(row["title"], terms)
    if body_headline and hl.START in body_headline:
        snippet_html = hl.elide(
            hl.marked_to_html(body_headline),
            hl.strip_sentinels(body_headline),
            row["body_text"],
        )
    else:
        snippet_html = hl.snippet(row["body_text"], terms)
    return Hit(
        article_id=row["id"],
        language=row["language"],
        slug=row["slug"],
        title=row["title"],
        title_html=title_html,
        snippet_html=snippet_html,
        score=float(row["score"]),
        category_id=row["category_id"],
        visibility=row["visibility"],
    )
