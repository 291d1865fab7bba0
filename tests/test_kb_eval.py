"""Search quality on the evaluation set (tests/data/kb_eval): recall@5 and MRR of the PostgreSQL
adapter for the queries customers really type.

The 78 articles are loaded the way an editor would make them (`create_article`, translations
with `create_translation`, `set_status`), handed to the port's `index`, and every one of the
162 queries is run through `PostgresSearch.search(query, Filters(language=...))`, the public,
published view a customer has. Figures per language and per kind of query are printed (run
with `-s` to see them); docs/KB_SEARCH_QUALITY.md explains them and the misses that remain.

    .venv/bin/python -m pytest -q -s tests/test_kb_eval.py

Metrics, as tests/data/kb_eval/README.md defines them:

- recall@5: the share of a query's relevant articles found in the first five results,
  averaged over the queries (a query with two relevant articles and one found scores 0.5);
- hit@5: the share of queries with at least one relevant article in the first five;
- MRR@10: the mean of 1 / rank of the first relevant result, 0 when none is in the first ten.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from helpdesk.db import Database
from knowledge_base import articles, categories
from knowledge_base.articles import ArticleInput
from knowledge_base.search import ArticleDoc, Filters, category_paths
from knowledge_base.search.postgres import PostgresSearch, search_terms

DATA = Path(__file__).resolve().parent / "data" / "kb_eval"
MIN_RECALL_AT_5 = 0.90
DEPTH = 10  # results read for MRR
LEAK_DEPTH = 100  # results checked for articles a customer must not see


def _jsonl(name: str) -> list[dict]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Tally:
    queries: int = 0
    recall: float = 0.0
    hits: float = 0.0
    reciprocal_rank: float = 0.0

    def add(self, recall: float, hit: float, rr: float) -> None:
        self.queries += 1
        self.recall += recall
        self.hits += hit
        self.reciprocal_rank += rr

    def row(self, name: str) -> str:
        n = self.queries
        return (
            f"{name:<16} {n:>4} {self.recall / n:>9.3f} {self.hits / n:>6.3f} "
            f"{self.reciprocal_rank / n:>7.3f}"
        )


async def _load(db: Database, search: PostgresSearch) -> dict[int, str]:
    """Every article of the set, with its status and visibility; {article id: key}."""
    keys: dict[int, str] = {}
    first_of_group: dict[str, int] = {}
    async with db.unit_of_work() as session:
        for a in _jsonl("articles.jsonl"):
            category = await categories.resolve_path(session, a["category"], language=a["language"])
            if a["group"] in first_of_group:
                article = await articles.create_translation(
                    session,
                    first_of_group[a["group"]],
                    a["language"],
                    a["title"],
                    a["body"],
                    author_id=None,
                    slug=a["key"],
                    visibility=a["visibility"],
                    tags=a["tags"],
                    category_id=category.id,
                )
            else:
                article = await articles.create_article(
                    session,
                    ArticleInput(
                        title=a["title"],
                        language=a["language"],
                        body_md=a["body"],
                        slug=a["key"],
                        category_id=category.id,
                        visibility=a["visibility"],
                        tags=a["tags"],
                    ),
                    author_id=None,
                )
                first_of_group[a["group"]] = article.id
            if a["status"] != "draft":
                await articles.set_status(session, article.id, a["status"], editor_id=None)
            keys[article.id] = a["key"]
    paths = await category_paths(db)
    async with db.unit_of_work() as session:
        loaded = [await articles.get_article(session, article_id) for article_id in keys]
        docs = [ArticleDoc.from_article(a, paths.get(a.category_id or 0, ())) for a in loaded]
    await search.index(docs)
    # The ranking weighs terms by how common they are, from the statistics ANALYZE keeps
    # (autovacuum would take them within a minute or so; the test does not wait).
    async with db.engine.begin() as conn:
        await conn.execute(text("ANALYZE kb_articles"))
    return keys


async def test_recall_at_5_on_the_evaluation_set(db: Database) -> None:
    all_articles = _jsonl("articles.jsonl")
    queries = _jsonl("queries.jsonl")
    hidden = {
        a["key"] for a in all_articles if a["visibility"] != "public" or a["status"] != "published"
    }
    search = PostgresSearch(db)
    keys = await _load(db, search)
    assert len(keys) == len(all_articles)

    tallies: dict[str, Tally] = defaultdict(Tally)
    leaks: list[tuple[str, list[str]]] = []
    misses: list[str] = []
    for q in queries:
        result = await search.search(q["query"], Filters(language=q["language"]), limit=LEAK_DEPTH)
        found = [keys[h.article_id] for h in result.hits]
        if hidden & set(found):
            leaks.append((q["query"], sorted(hidden & set(found))))
        relevant = set(q["relevant"])
        top = found[:DEPTH]
        recall = len(relevant & set(top[:5])) / len(relevant)
        hit = 1.0 if relevant & set(top[:5]) else 0.0
        rr = next((1 / rank for rank, key in enumerate(top, 1) if key in relevant), 0.0)
        for group in ("all", q["language"], f"{q['language']}/{q['kind']}"):
            tallies[group].add(recall, hit, rr)
        if recall < 1:
            misses.append(f"  {q['language']} {q['kind']:<10} {q['query']}  ->  {top[:5]}")

    print()
    print(f"{'':<16} {'n':>4} {'recall@5':>9} {'hit@5':>6} {'MRR@10':>7}")
    for group in sorted(tallies, key=lambda g: (g != "all", g.split("/")[0], "/" in g, g)):
        print(tallies[group].row(group))
    print(f"queries not fully answered in the top 5 ({len(misses)}):")
    print("\n".join(misses))

    assert leaks == [], f"internal, draft or archived articles in results: {leaks}"
    overall = tallies["all"]
    assert overall.recall / overall.queries >= MIN_RECALL_AT_5


async def test_queries_are_split_into_terms_as_articles_are(db: Database) -> None:
    """The adapter splits a query in Python the way migration 0006's `kb_search_terms` splits
    an article in SQL: any difference would be a term that can never match."""
    texts = [q["query"] for q in _jsonl("queries.jsonl")]
    for a in _jsonl("articles.jsonl"):
        texts += [a["title"], a["body"]]
    texts += [
        "ｽﾏﾎ紛失",
        "Ｗｉ－Ｆｉ",
        "wi-fi-6e ルーター",
        "々",
        "ー",
        "Ａ",
        "eSIMの設定",
        "k" * 65,
    ]
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT t, kb_search_terms(t) FROM unnest(CAST(:texts AS text[])) AS t"),
            {"texts": texts},
        )
        in_sql = {t: sorted(terms) for t, terms in rows}
    assert {t: sorted(search_terms(t)) for t in texts} == in_sql
