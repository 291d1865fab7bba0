"""knowledge base search: a term vector of character bigrams for Japanese (kb_articles.search_grams)

Japanese has no spaces, and most of its words are two characters (返品, 解約, 住所), which the
trigram indexes cannot look up: pg_trgm takes nothing from a two-character LIKE pattern and
scans the table. `search_grams` holds every overlapping pair of characters of each run of
Japanese (kanji, kana) in the title (weight A) and the body (weight B), NFKC-folded, plus the
Latin words and numbers ("wi-fi" as wi, fi and wifi), in a GIN index. The search scores
articles by the pairs they share with the query, so 「返品したい」 finds an article about
返品 although the article never says したい.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with knowledge_base/search/postgres.py (`search_terms`), which splits queries
# the same way: CJK is 々〆, hiragana, katakana with ー, CJK ideographs (and extension A,
# compatibility ideographs), hangul syllables; a run of one character is kept whole. Words
# longer than 64 characters (a pasted key or hash) are left out: a lexeme has at most 2 KB.
TERMS_FUNCTION = r"""
CREATE FUNCTION kb_search_terms(doc text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    WITH folded(v) AS (SELECT lower(normalize(doc, NFKC)))
    SELECT coalesce(array_agg(DISTINCT term), '{}')
    FROM (
        SELECT CASE WHEN length(m.r[1]) = 1 THEN m.r[1] ELSE substr(m.r[1], i, 2) END
        FROM folded,
             regexp_matches(folded.v,
                 '[\u3005\u3006\u3041-\u3096\u309d\u309e\u30a1-\u30fa\u30fc-\u30ff'
                 '\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+', 'g') AS m(r),
             generate_series(1, greatest(length(m.r[1]) - 1, 1)) AS i
        UNION ALL
        SELECT unnest(string_to_array(w.r[1], '-') || replace(w.r[1], '-', ''))
        FROM folded, regexp_matches(folded.v, '[0-9a-z]+(?:-[0-9a-z]+)*', 'g') AS w(r)
    ) AS terms(term)
    WHERE length(term) <= 64
$fn$
"""

# Positions only carry the weights (A title, B body): a term is listed once per field. (`\:` is
# a colon: op.execute reads `:name` as a bind parameter.)
GRAMS_FUNCTION = r"""
CREATE FUNCTION kb_search_grams(title text, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT coalesce((SELECT string_agg(t || '\:1A', ' ') FROM unnest(kb_search_terms(title)) t),
                    '')::tsvector
        || coalesce((SELECT string_agg(t || '\:1B', ' ') FROM unnest(kb_search_terms(body)) t),
                    '')::tsvector
$fn$
"""


def upgrade() -> None:
    op.execute(TERMS_FUNCTION)
    op.execute(GRAMS_FUNCTION)
    # One statement, so the table is rewritten once, with the new storage.
    # - STORAGE MAIN: ranking reads the term vector of every candidate (ts_rank, once per
    #   band of terms). Kept in the row, compressed, rather than in the TOAST table, a read
    #   is a decompress instead of a TOAST index lookup. (A row still too big once the other
    #   columns went out of line moves them out too.)
    # - STATISTICS 1000: the search weighs terms by the share of articles holding them, from
    #   the column's most common elements, and corrects misspellings against the Latin words
    #   among them; the default target keeps only about 1,000 elements, which Japanese
    #   pairs crowd out. 1000 keeps up to 10,000.
    op.execute(
        "ALTER TABLE kb_articles"
        " ADD COLUMN search_grams tsvector"
        " GENERATED ALWAYS AS (kb_search_grams(title, body_text)) STORED NOT NULL,"
        " ALTER COLUMN search_grams SET STORAGE MAIN,"
        " ALTER COLUMN search_grams SET STATISTICS 1000,"
        " ALTER COLUMN search_vector SET STORAGE MAIN"
    )
    op.create_index(
        "ix_kb_articles_search_grams",
        "kb_articles",
        ["search_grams"],
        unique=False,
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.execute("ALTER TABLE kb_articles ALTER COLUMN search_vector SET STORAGE EXTENDED")
    op.drop_index("ix_kb_articles_search_grams", table_name="kb_articles", postgresql_using="gin")
    op.drop_column("kb_articles", "search_grams")
    op.execute("DROP FUNCTION kb_search_grams(text, text)")
    op.execute("DROP FUNCTION kb_search_terms(text)")
