"""Benchmark: customer lookup at contact-center scale (the foundation's figures).

    .venv/bin/python bench/lookup.py [--customers 100000] [--explain]

Starts its own embedded PostgreSQL in a temp dir (or, with HELPDESK_BENCH_DATABASE_URL set,
creates a throwaway database on that server), migrates it, bulk-loads N customers with about
two identities each (COPY; the normalized values and search_text come from helpdesk's own
functions), then measures with warmup:

  (a) the screen-pop phone lookup (identities.customers_for_phone), hits in varied input
      formats and misses;
  (b) customers.search_customers by kanji, kana, English name, email and phone;
  (c) customers.customer_card;
  (d) the same over HTTP through the real app (`helpdesk serve`, uvicorn, on a free port)
      with a valid JWT, at 1 and 16 concurrent clients, plus in-process (ASGITransport).

Every domain call runs in its own unit of work (BEGIN ... COMMIT), as the endpoints do.
Prints a table to stdout. Nothing in the checkout is touched; everything is removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import random
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import phonenumbers
import psutil
from sqlalchemy import event
from sqlalchemy.engine import make_url

from helpdesk import auth, migrations
from helpdesk.config import Settings
from helpdesk.customers import customer_card, search_customers, search_text_for
from helpdesk.db import Database
from helpdesk.embedded_pg import EmbeddedPostgres
from helpdesk.identities import customers_for_phone, normalize_identity, normalize_phone
from helpdesk.models import Customer
from helpdesk.web.app import create_app

REGION = "JP"
SECRET = "bench-secret-key-that-is-long-enough-for-hs256"
# Durability off only speeds up the bulk load; the measured queries are reads.
SERVER_OPTIONS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
POOL_SIZE = 16

# -- names -----------------------------------------------------------------------------------


def _rows(text: str) -> list[tuple[str, ...]]:
    """Records of space-separated fields, several to a line, two spaces between records."""
    lines = text.strip().splitlines()
    return [tuple(rec.split()) for line in lines for rec in line.split("  ") if rec.strip()]


# kanji, katakana reading, romaji; roughly in order of frequency
SURNAMES = _rows("""
佐藤 サトウ sato  鈴木 スズキ suzuki  高橋 タカハシ takahashi  田中 タナカ tanaka  伊藤 イトウ ito
渡辺 ワタナベ watanabe  山本 ヤマモト yamamoto  中村 ナカムラ nakamura  小林 コバヤシ kobayashi  加藤 カトウ kato
吉田 ヨシダ yoshida  山田 ヤマダ yamada  佐々木 ササキ sasaki  山口 ヤマグチ yamaguchi  松本 マツモト matsumoto
井上 イノウエ inoue  木村 キムラ kimura  林 ハヤシ hayashi  斎藤 サイトウ saito  清水 シミズ shimizu
山崎 ヤマザキ yamazaki  森 モリ mori  池田 イケダ ikeda  橋本 ハシモト hashimoto  阿部 アベ abe
石川 イシカワ ishikawa  山下 ヤマシタ yamashita  中島 ナカジマ nakajima  石井 イシイ ishii  小川 オガワ ogawa
前田 マエダ maeda  岡田 オカダ okada  長谷川 ハセガワ hasegawa  藤田 フジタ fujita  後藤 ゴトウ goto
近藤 コンドウ kondo  村上 ムラカミ murakami  遠藤 エンドウ endo  青木 アオキ aoki  坂本 サカモト sakamoto
斉藤 サイトウ saito  福田 フクダ fukuda  太田 オオタ ota  西村 ニシムラ nishimura  藤井 フジイ fujii
金子 カネコ kaneko  岡本 オカモト okamoto  藤原 フジワラ fujiwara  中野 ナカノ nakano  三浦 ミウラ miura
原田 ハラダ harada  中川 ナカガワ nakagawa  松田 マツダ matsuda  竹内 タケウチ takeuchi  小野 オノ ono
田村 タムラ tamura  中山 ナカヤマ nakayama  和田 ワダ wada  石田 イシダ ishida  森田 モリタ morita
上田 ウエダ ueda  原 ハラ hara  柴田 シバタ shibata  酒井 サカイ sakai  工藤 クドウ kudo
横山 ヨコヤマ yokoyama  宮崎 ミヤザキ miyazaki  宮本 ミヤモト miyamoto  内田 ウチダ uchida  高木 タカギ takagi
安藤 アンドウ ando  島田 シマダ shimada  谷口 タニグチ taniguchi  大野 オオノ ono  丸山 マルヤマ maruyama
今井 イマイ imai  河野 コウノ kono  藤本 フジモト fujimoto  村田 ムラタ murata  武田 タケダ takeda
上野 ウエノ ueno  杉山 スギヤマ sugiyama  増田 マスダ masuda  小島 コジマ kojima  千葉 チバ chiba
久保 クボ kubo  松井 マツイ matsui  岩崎 イワサキ iwasaki  桜井 サクライ sakurai  野口 ノグチ noguchi
渡部 ワタナベ watanabe  髙橋 タカハシ takahashi  齋藤 サイトウ saito  東海林 ショウジ shoji
""")
GIVEN_NAMES = _rows("""
太郎 タロウ taro  次郎 ジロウ jiro  一郎 イチロウ ichiro  健太 ケンタ kenta  翔太 ショウタ shota
大輔 ダイスケ daisuke  拓也 タクヤ takuya  直樹 ナオキ naoki  誠 マコト makoto  浩 ヒロシ hiroshi
健一 ケンイチ kenichi  達也 タツヤ tatsuya  亮 リョウ ryo  蓮 レン ren  陽翔 ハルト haruto
悠真 ユウマ yuma  大翔 ヒロト hiroto  湊 ミナト minato  和也 カズヤ kazuya  隆 タカシ takashi
修 オサム osamu  剛 ツヨシ tsuyoshi  聡 サトシ satoshi  秀樹 ヒデキ hideki  優斗 ユウト yuto
花子 ハナコ hanako  洋子 ヨウコ yoko  恵子 ケイコ keiko  美咲 ミサキ misaki  陽菜 ヒナ hina
結衣 ユイ yui  さくら サクラ sakura  愛 アイ ai  真由美 マユミ mayumi  裕子 ユウコ yuko
由美子 ユミコ yumiko  明美 アケミ akemi  直美 ナオミ naomi  智子 トモコ tomoko  久美子 クミコ kumiko
彩 アヤ aya  葵 アオイ aoi  凛 リン rin  結菜 ユイナ yuina  芽衣 メイ mei
千尋 チヒロ chihiro  麻衣 マイ mai  舞 マイ mai  香織 カオリ kaori  美穂 ミホ miho
陽子 ヨウコ yoko  真理子 マリコ mariko  翼 ツバサ tsubasa  光 ヒカル hikaru  健 ケン ken
学 マナブ manabu  実 ミノル minoru
""")
EN_FIRST = _rows("""
James ジェームズ  John ジョン  Robert ロバート  Michael マイケル  William ウィリアム
David デイビッド  Richard リチャード  Thomas トーマス  Daniel ダニエル  Matthew マシュー
Christopher クリストファー  Andrew アンドリュー  Kevin ケビン  Brian ブライアン  Mary メアリー
Patricia パトリシア  Jennifer ジェニファー  Linda リンダ  Elizabeth エリザベス  Sarah サラ
Emily エミリー  Jessica ジェシカ  Emma エマ  Olivia オリビア  Sophie ソフィー
Laura ローラ  Anna アンナ  Maria マリア  Chris クリス  Lucas ルーカス
""")
EN_LAST = _rows("""
Smith スミス  Johnson ジョンソン  Williams ウィリアムズ  Brown ブラウン  Jones ジョーンズ
Garcia ガルシア  Miller ミラー  Davis デイビス  Wilson ウィルソン  Anderson アンダーソン
Taylor テイラー  Moore ムーア  Martin マーティン  Jackson ジャクソン  White ホワイト
Harris ハリス  Clark クラーク  Lewis ルイス  Walker ウォーカー  Young ヤング
Allen アレン  King キング  Wright ライト  Scott スコット  Green グリーン
Baker ベイカー  Adams アダムス  Nelson ネルソン  Hill ヒル  Campbell キャンベル
Mitchell ミッチェル  Roberts ロバーツ  O'Brien オブライエン  Müller ミュラー  Nguyen グエン
""")
ORG_CORES = _rows("""
東京 tokyo  大阪 osaka  日本 nihon  北海道 hokkaido  富士 fuji  桜 sakura
青空 aozora  未来 mirai  中央 chuo  東洋 toyo  太平洋 taiheiyo  三和 sanwa
大和 yamato  丸福 marufuku  アオバ aoba  ミドリ midori  サンライズ sunrise  グローバル global
テクノ techno  ネクスト next  ＡＢＣ abc  光 hikari  瑞穂 mizuho  港 minato
新宿 shinjuku  横浜 yokohama  名古屋 nagoya  福岡 fukuoka  札幌 sapporo  京都 kyoto
""")
ORG_KINDS = [
    "商事",
    "物産",
    "工業",
    "製作所",
    "システムズ",
    "ソリューションズ",
    "電機",
    "建設",
    "運輸",
    "食品",
    "不動産",
    "薬品",
    "ホールディングス",
    "サービス",
    "出版",
    "印刷",
]
EN_ORG_KINDS = ["Trading", "Systems", "Logistics", "Foods", "Consulting", "Electronics"]
EN_ORG_SUFFIX = ["Co., Ltd.", "Inc.", "K.K.", "LLC", "Corporation"]
MAIL_DOMAINS = [
    "gmail.com",
    "yahoo.co.jp",
    "docomo.ne.jp",
    "ezweb.ne.jp",
    "softbank.ne.jp",
    "icloud.com",
    "outlook.jp",
    "nifty.com",
    "example.co.jp",
    "例え.jp",
]
SUBJECTS = """
請求書の再発行について
ログインできません
配送状況の確認
解約の手続き
商品が届かない
パスワード再設定
Refund request
Cannot log in
Change of address
返品したい
料金プランの変更
Invoice question
""".strip().splitlines()
OPEN = ("new", "open", "pending", "on_hold")
CLOSED = ("solved", "closed")


def _halfwidth_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for code in range(0xFF66, 0xFF9E):
        hw = chr(code)
        table.setdefault(unicodedata.normalize("NFKC", hw), hw)
        for mark in ("\uff9e", "\uff9f"):
            fw = unicodedata.normalize("NFKC", hw + mark)
            if len(fw) == 1:
                table.setdefault(fw, hw + mark)
    return table


HALFWIDTH = _halfwidth_table()
FULLWIDTH_ASCII = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}


def halfwidth_kana(text: str) -> str:
    return "".join(HALFWIDTH.get(ch, ch) for ch in text)


def fullwidth(text: str) -> str:
    return "".join(FULLWIDTH_ASCII.get(ch, ch) for ch in text)


def hiragana(text: str) -> str:
    return "".join(chr(ord(c) - 0x60) if 0x30A1 <= ord(c) <= 0x30F6 else c for c in text)


# -- phone numbers ---------------------------------------------------------------------------


def new_number(rng: random.Random) -> str:
    """A valid Japanese number in the usual hyphenated national form."""
    while True:
        national = _candidate_number(rng)
        if phonenumbers.is_valid_number(phonenumbers.parse(national, REGION)):
            return national


def _candidate_number(rng: random.Random) -> str:
    r = rng.random()
    d = rng.randint
    if r < 0.55:  # mobile
        return f"0{rng.choice('987')}0-{d(1000, 9999)}-{d(1000, 9999)}"
    if r < 0.75:  # Tokyo / Osaka
        return f"0{rng.choice('36')}-{d(2000, 6999)}-{d(1000, 9999)}"
    if r < 0.90:  # three-digit area codes
        area = rng.choice(["045", "052", "011", "092", "075", "078", "022", "082", "048"])
        return f"{area}-{d(200, 999)}-{d(1000, 9999)}"
    if r < 0.95:
        return f"050-{d(1000, 9999)}-{d(1000, 9999)}"
    return f"0120-{d(100, 999)}-{d(100, 999)}"


def stored_format(national: str, rng: random.Random) -> str:
    """How a number was typed into the CRM (or imported) once."""
    parts = national.split("-")
    digits = "".join(parts)
    r = rng.random()
    if r < 0.5:
        return national
    if r < 0.7:
        return digits
    if r < 0.8:
        return "+81 " + "-".join([parts[0][1:], *parts[1:]])
    if r < 0.9:
        return "+81" + digits[1:]
    if r < 0.95:
        return fullwidth(national)
    return f"{parts[0]}({parts[1]}){parts[2]}"


def lookup_variants(national: str) -> list[str]:
    """The ways a number reaches the lookup: from PBXs, from abroad, typed by agents."""
    parts = national.split("-")
    digits = "".join(parts)
    intl = [parts[0][1:], *parts[1:]]
    return [
        "+81" + digits[1:],  # E.164 from a PBX (the common case)
        digits,
        national,
        "+81 " + " ".join(intl),
        f"({parts[0]}) {parts[1]}-{parts[2]}",
        fullwidth(national),
        "ー".join(parts),  # long-vowel mark typed as a dash
        "0081" + digits[1:],  # international prefix 00 from abroad
        "tel:+81-" + "-".join(intl),
    ]


# -- data set --------------------------------------------------------------------------------


@dataclass
class Dataset:
    customers: list[tuple[Any, ...]] = field(default_factory=list)
    identities: list[tuple[Any, ...]] = field(default_factory=list)
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    live_ids: list[int] = field(default_factory=list)
    phones: list[tuple[str, str]] = field(default_factory=list)  # (national, e164), live
    emails: list[str] = field(default_factory=list)  # raw, live
    ja_names: list[tuple[str, str, str, str]] = field(default_factory=list)  # kanji, kana
    kana_names: list[tuple[str, str, str, str]] = field(default_factory=list)  # kana stored
    en_names: list[tuple[str, str]] = field(default_factory=list)
    used_digits: set[str] = field(default_factory=set)
    shared_numbers: int = 0
    merged: int = 0


CUSTOMER_COLUMNS = (
    "id", "name", "name_kana", "organization", "language", "tier", "notes", "search_text",
    "merged_into_id", "created_at", "updated_at",
)  # fmt: skip
IDENTITY_COLUMNS = (
    "customer_id", "kind", "raw_value", "normalized", "verified", "is_primary", "created_at",
)  # fmt: skip
CASE_COLUMNS = (
    "customer_id",
    "subject",
    "status",
    "priority",
    "channel",
    "created_at",
    "updated_at",
)


def generate(n: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    ds = Dataset()
    now = datetime.now(UTC)
    sur_weights = [1 / (i + 4) for i in range(len(SURNAMES))]

    def unique_number() -> str:
        while True:
            national = new_number(rng)
            digits = national.replace("-", "")
            if digits not in ds.used_digits:
                ds.used_digits.add(digits)
                return national

    orgs = []
    for i in range(max(50, n // 40)):
        core, slug = rng.choice(ORG_CORES)
        if rng.random() < 0.8:
            kind = rng.choice(ORG_KINDS)
            name = f"株式会社{core}{kind}" if rng.random() < 0.6 else f"{core}{kind}株式会社"
        else:
            name = f"{slug.title()} {rng.choice(EN_ORG_KINDS)} {rng.choice(EN_ORG_SUFFIX)}"
        orgs.append((name, f"{slug}{i}.co.jp", unique_number()))

    identity_keys: set[tuple[int, str, str]] = set()

    def add_identity(cid: int, kind: str, raw: str, primary: bool, created: datetime) -> str:
        raw = raw.strip()[:320]
        normalized = normalize_identity(kind, raw, REGION)  # exactly what create_customer does
        if (cid, kind, normalized) not in identity_keys:
            identity_keys.add((cid, kind, normalized))
            verified = rng.random() < 0.3
            ds.identities.append((cid, kind, raw, normalized, verified, primary, created))
        return normalized

    for cid in range(1, n + 1):
        created = now - timedelta(seconds=rng.randint(0, 5 * 365 * 86400))
        org = rng.choice(orgs) if rng.random() < 0.3 else None
        if rng.random() < 0.8:
            sur, sur_kana, sur_r = rng.choices(SURNAMES, sur_weights)[0]
            given, given_kana, given_r = rng.choice(GIVEN_NAMES)
            sep = rng.choices([" ", "\u3000", ""], [0.6, 0.25, 0.15])[0]
            name = f"{sur}{sep}{given}"
            kana = f"{sur_kana} {given_kana}"
            r = rng.random()
            kana_value: str | None = (
                kana
                if r < 0.7
                else hiragana(kana)
                if r < 0.85
                else halfwidth_kana(kana)
                if r < 0.95
                else None
            )
            language = "ja"
            local = rng.choice(
                [
                    f"{given_r}.{sur_r}",
                    f"{sur_r}{rng.randint(1, 9999)}",
                    f"{given_r[0]}.{sur_r}{rng.randint(1, 99)}",
                    f"{sur_r}_{given_r}{rng.randint(60, 99)}",
                ]
            )
            name_parts: tuple[str, ...] = (sur, given, sur_kana, given_kana)
        else:
            first, first_kana = rng.choice(EN_FIRST)
            last, last_kana = rng.choice(EN_LAST)
            name = f"{first} {last}"
            kana_value = f"{first_kana} {last_kana}" if rng.random() < 0.5 else None
            language = "en"
            last_slug = last.lower().replace("'", "")
            local = f"{first.lower()}.{last_slug}{rng.randint(1, 999)}"
            name_parts = (first, last)
        organization = org[0] if org else None
        customer = Customer(name=name.strip(), name_kana=kana_value, organization=organization)
        merged_into = None
        if cid > 100 and rng.random() < 0.01:
            merged_into = rng.randint(1, cid - 1)
            while ds.customers[merged_into - 1][8] is not None:
                merged_into = rng.randint(1, cid - 1)
            ds.merged += 1
        ds.customers.append(
            (
                cid,
                customer.name,
                customer.name_kana,
                organization,
                language,
                rng.choices(["standard", "silver", "gold", "platinum"], [80, 12, 6, 2])[0],
                None,
                search_text_for(customer),  # exactly what create_customer stores
                merged_into,
                created,
                created + timedelta(seconds=rng.randint(0, 86400 * 30)),
            )
        )
        # A merged customer's identities moved to the survivor (merge_customers does that).
        owner = merged_into or cid
        live = merged_into is None
        phones = []
        if rng.random() < 0.95:
            phones.append(unique_number())
        if rng.random() < 0.35:
            phones.append(unique_number())
        for i, national in enumerate(phones):
            e164 = add_identity(owner, "phone", stored_format(national, rng), i == 0, created)
            ds.phones.append((national, e164))
        if org and rng.random() < 0.15:  # the company's main line, shared by its staff
            add_identity(owner, "phone", stored_format(org[2], rng), not phones, created)
            ds.phones.append((org[2], normalize_phone(org[2], REGION)))
        if rng.random() < 0.7:
            domain = org[1] if org and rng.random() < 0.6 else rng.choice(MAIL_DOMAINS)
            raw = f"{local}@{domain}"
            if rng.random() < 0.1:
                raw = raw.title()
            add_identity(owner, "email", raw, True, created)
            ds.emails.append(raw)
        if live:
            ds.live_ids.append(cid)
            if language == "ja":
                ds.ja_names.append(name_parts)  # type: ignore[arg-type]
                if kana_value:
                    ds.kana_names.append(name_parts)  # type: ignore[arg-type]
            else:
                ds.en_names.append(name_parts)  # type: ignore[arg-type]
        if rng.random() < 0.25:
            for _ in range(rng.randint(1, 4)):
                opened = created + timedelta(seconds=rng.randint(0, 86400 * 365))
                ds.cases.append(
                    (
                        owner,
                        rng.choice(SUBJECTS),
                        rng.choice(OPEN) if rng.random() < 0.3 else rng.choice(CLOSED),
                        rng.choice(["low", "normal", "normal", "high", "urgent"]),
                        rng.choice(["phone", "phone", "email", "chat", "web"]),
                        opened,
                        opened + timedelta(seconds=rng.randint(0, 86400 * 10)),
                    )
                )
    # Keep only lookups that the data set really answers (an identity may have been dropped
    # as a duplicate when a merged customer's identities moved to the survivor).
    counts: dict[str, int] = {}
    for _, kind, _, normalized, *_ in ds.identities:
        if kind == "phone":
            counts[normalized] = counts.get(normalized, 0) + 1
    ds.shared_numbers = sum(1 for c in counts.values() if c > 1)
    return ds


# -- database --------------------------------------------------------------------------------


async def raw_connect(url: str) -> asyncpg.Connection:
    u = make_url(url)
    host = u.query.get("host") or u.host
    port = int(u.query.get("port") or u.port or 5432)
    return await asyncpg.connect(
        host=host, port=port, user=u.username, password=u.password, database=u.database
    )


async def load(url: str, ds: Dataset) -> dict[str, float]:
    conn = await raw_connect(url)
    timings = {}
    try:
        t = time.perf_counter()
        await conn.copy_records_to_table(
            "customers", records=ds.customers, columns=list(CUSTOMER_COLUMNS)
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('customers', 'id'), max(id)) FROM customers"
        )
        await conn.copy_records_to_table(
            "contact_identities", records=ds.identities, columns=list(IDENTITY_COLUMNS)
        )
        await conn.copy_records_to_table("cases", records=ds.cases, columns=list(CASE_COLUMNS))
        timings["copy"] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) customers, contact_identities, cases")
        timings["vacuum_analyze"] = time.perf_counter() - t
    finally:
        await conn.close()
    return timings


async def db_facts(url: str) -> dict[str, str]:
    conn = await raw_connect(url)
    try:
        facts = {
            "version": await conn.fetchval("SHOW server_version"),
            "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
            "db_size": await conn.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            ),
        }
        for rel in (
            "customers",
            "contact_identities",
            "cases",
            "ix_contact_identities_lookup",
            "ix_customers_search_text_trgm",
            "uq_identity_customer_value",
        ):
            facts[rel] = await conn.fetchval(
                "SELECT pg_size_pretty(pg_total_relation_size($1::regclass))", rel
            )
    finally:
        await conn.close()
    return facts


# -- measuring -------------------------------------------------------------------------------


class CpuMeter:
    """CPU time used by this process, the app server process and the PostgreSQL server: on a
    2-core machine it shows who the bottleneck is."""

    def __init__(self) -> None:
        self.server_pid: int | None = None
        self.postmaster_pid: int | None = None

    @staticmethod
    def _cpu(pid: int | None, children: bool = False) -> float | None:
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)] if children else [proc]
            # Backends that exit (pool overflow connections) are counted through the
            # postmaster's children_* times once it has reaped them.
            t = proc.cpu_times()
            total = t.user + t.system + (t.children_user + t.children_system if children else 0)
            for p in procs[1:]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            return total
        except psutil.Error:
            return None

    def snapshot(self) -> tuple[float | None, ...]:
        return (
            time.process_time(),
            self._cpu(self.server_pid),
            self._cpu(self.postmaster_pid, children=True),
        )


METER = CpuMeter()


@dataclass
class Result:
    name: str
    concurrency: int
    latencies: list[float]
    wall: float
    rows: int
    errors: int
    first_error: str = ""
    cpu: tuple[float | None, ...] = ()  # CPU seconds: bench process, app server, PostgreSQL

    def pct(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


async def measure(
    name: str,
    fn: Callable[[Any], Awaitable[int]],
    inputs: Sequence[Any],
    *,
    concurrency: int = 1,
    warmup: int = 200,
) -> Result:
    """Run `fn` over `inputs` from `concurrency` tasks; fn returns the number of rows found."""
    latencies: list[float] = []
    rows = errors = 0
    first_error = ""
    for item in inputs[:warmup]:
        try:
            await fn(item)
        except Exception as exc:
            errors += 1
            first_error = first_error or f"(warmup) {type(exc).__name__}: {exc}"
    it = iter(inputs[warmup:])

    async def worker() -> None:
        nonlocal rows, errors, first_error
        for item in it:
            t0 = time.perf_counter()
            try:
                found = await fn(item)
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                continue
            latencies.append(time.perf_counter() - t0)
            rows += found

    cpu_before = METER.snapshot()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    cpu = tuple(
        None if a is None or b is None else b - a
        for a, b in zip(cpu_before, METER.snapshot(), strict=True)
    )
    result = Result(name, concurrency, latencies, wall, rows, errors, first_error, cpu)
    print(f"  measured {name} (c={concurrency}): p50 {result.pct(50) * 1e3:.2f} ms", flush=True)
    return result


def _pad(text: str, width: int) -> str:
    """Left-align in a terminal, where kanji and kana take two columns."""
    cells = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - cells)


def table(results: list[Result]) -> str:
    name_width = 50
    head = (
        f"{'scenario':<{name_width}} {'conc':>4} {'ops':>5} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'max':>7} {'ops/s':>6} {'rows':>5} {'bench':>6} {'server':>6} {'pg':>6} {'err':>3}"
    )
    units = (
        f"{'':<{name_width}} {'':>4} {'':>5} {'ms':>7} {'ms':>7} {'ms':>7} {'ms':>7} {'':>6} "
        f"{'/op':>5} {'CPU ms per op':>20} {'':>3}"
    )
    lines = [head, units, "-" * len(head)]
    for r in results:
        ops = len(r.latencies)
        cpu = [
            f"{c / ops * 1e3:>6.2f}" if c is not None and ops else f"{'-':>6}"
            for c in (r.cpu or (None, None, None))
        ]
        lines.append(
            f"{_pad(r.name, name_width)} {r.concurrency:>4} {ops:>5} {r.pct(50) * 1e3:>7.2f} "
            f"{r.pct(95) * 1e3:>7.2f} {r.pct(99) * 1e3:>7.2f} {max(r.latencies) * 1e3:>7.2f} "
            f"{ops / r.wall:>6.0f} {r.rows / max(ops, 1):>5.1f} {' '.join(cpu)} {r.errors:>3}"
        )
    errors = [f"  {r.name}: {r.first_error}" for r in results if r.errors]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines)


# -- statement capture for --explain ---------------------------------------------------------


class Capture:
    def __init__(self, db: Database) -> None:
        self.on = False
        self.statements: list[tuple[str, Sequence[Any]]] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if self.on and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, parameters or ()))


async def explain(db: Database, capture: Capture, label: str, call: Callable[[], Awaitable[Any]]):  # type: ignore[no-untyped-def]
    capture.statements.clear()
    capture.on = True
    try:
        await call()
    finally:
        capture.on = False
    out = [f"== {label}"]
    async with db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        for statement, params in capture.statements:
            out.append(statement.strip())
            out.append(f"  params: {list(params)!r}")
            # The plan for these values (a custom plan) ...
            rows = await raw.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *params)
            out += ["  " + r[0] for r in rows]
            # ... and the generic plan, which a prepared statement (asyncpg prepares every
            # statement) may switch to after five executions.
            literals = ", ".join(_literal(p) for p in params)
            await raw.execute(f"PREPARE bench_stmt AS {statement}")
            try:
                await raw.execute("SET plan_cache_mode = force_generic_plan")
                execute = f"EXECUTE bench_stmt({literals})" if params else "EXECUTE bench_stmt"
                rows = await raw.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {execute}")
                out.append("  generic plan:")
                out += ["    " + r[0] for r in rows]
            finally:
                await raw.execute("RESET plan_cache_mode")
                await raw.execute("DEALLOCATE bench_stmt")
            out.append("")
    return "\n".join(out)


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# -- the benchmark ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """`helpdesk serve` (uvicorn, the production entry point) on a free port."""
    port = free_port()
    exe = Path(sys.executable).with_name("helpdesk")
    cmd = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "import sys; from helpdesk.cli import main; sys.exit(main())"]
    )
    env = {
        **os.environ,
        "HELPDESK_DATABASE_URL": url,
        "HELPDESK_DATA_DIR": str(data_dir),
        "HELPDESK_SECRET_KEY": SECRET,
    }
    # Output to a file, never an unread pipe: a server whose pipe buffer fills (its access log
    # does after a few hundred requests) blocks in its next log write, event loop and all.
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"helpdesk-serve-{port}.log"
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log_path.read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"helpdesk serve exited with {proc.returncode}:\n{output}")
        try:
            if httpx.get(base + "/readyz", timeout=1.0, trust_env=False).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("helpdesk serve did not become ready")


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def scaled(count: int, n: int) -> int:
    """Fewer operations for a small data set: a quick run stays quick."""
    return count if n >= 50_000 else max(100, count // 4)


async def run(args: argparse.Namespace, url: str, work_dir: Path) -> None:
    n = args.customers
    rng = random.Random(args.seed + 1)
    setup = Database.from_url(url, pool_size=2)
    t0 = time.perf_counter()
    await migrations.upgrade(setup.engine)
    migrate_s = time.perf_counter() - t0
    async with setup.unit_of_work() as session:
        user = await auth.create_user(
            session, "bench-agent@example.com", "Bench Agent", "agent", "bench-password-123"
        )
    token = auth.issue_token(user, SECRET, 3600)
    await setup.dispose()

    print(f"generating {n:,} customers ...", flush=True)
    t0 = time.perf_counter()
    ds = generate(n, args.seed)
    gen_s = time.perf_counter() - t0
    print(f"loading ({len(ds.identities):,} identities, {len(ds.cases):,} cases) ...", flush=True)
    load_t = await load(url, ds)
    n_identities, n_cases = len(ds.identities), len(ds.cases)
    n_phones = sum(1 for i in ds.identities if i[1] == "phone")
    # Drop the loaded rows and freeze what is left, so that the cyclic garbage collector does
    # not walk a million tuples in the middle of a measurement (100 ms pauses otherwise).
    ds.customers, ds.identities, ds.cases = [], [], []
    gc.collect()
    gc.freeze()
    load_s = gen_s + sum(load_t.values())
    facts = await db_facts(url)

    # -- inputs
    def sample(seq: Sequence[Any], k: int) -> list[Any]:
        return [rng.choice(seq) for _ in range(k)]

    mismatches = 0
    hits: list[str] = []
    for national, e164 in sample(ds.phones, scaled(3000, n) + 200):
        variant = rng.choice(lookup_variants(national))
        if normalize_phone(variant, REGION) != e164:
            mismatches += 1
        hits.append(variant)
    misses = []
    while len(misses) < scaled(2000, n) + 200:
        national = new_number(rng)
        if national.replace("-", "") not in ds.used_digits:
            misses.append(rng.choice(lookup_variants(national)))
    ja = ds.ja_names
    en = ds.en_names or [("John", "Smith")]
    k = scaled(500, n) + 100
    q_kanji_sur = [s[0] for s in sample(ja, k)]
    q_kanji_full = [s[0] + s[1] for s in sample(ja, k)]
    kana = ds.kana_names or ja
    q_kata_sur = [s[2] for s in sample(kana, k)]
    q_hira_full = [hiragana(s[2] + s[3]) for s in sample(kana, k)]
    q_en = [s[1][:5].lower() for s in sample(en, k)]
    q_email = [e.upper() if rng.random() < 0.2 else e for e in sample(ds.emails, k)]
    # what an agent types in the search box (the first six variants)
    q_phone = [rng.choice(lookup_variants(p[0])[:6]) for p in sample(ds.phones, k)]
    # Names nobody has: the common "not in the CRM yet" search. Two characters cannot use the
    # trigram index, four can.
    rare = "鷹鶴亀龍虎鯨鹿熊猿狐狸狼鷲鴎燕雀"
    q_none_2 = [rng.choice(rare) + rng.choice(rare) for _ in range(k)]
    q_none_4 = ["".join(rng.choice(rare) for _ in range(4)) for _ in range(k)]
    card_ids = sample(ds.live_ids, scaled(2000, n) + 200)

    db = Database.from_url(url, pool_size=POOL_SIZE)
    capture = Capture(db)

    async def phone_lookup(raw: str) -> int:
        async with db.unit_of_work() as session:
            return len(await customers_for_phone(session, raw, REGION))

    async def expect_hit(raw: str) -> int:
        found = await phone_lookup(raw)
        if not found:
            raise LookupError(f"no customer for {raw!r}")
        return found

    async def expect_miss(raw: str) -> int:
        found = await phone_lookup(raw)
        if found:
            raise LookupError(f"unexpected customer for {raw!r}")
        return found

    async def normalize_only(raw: str) -> int:
        normalize_phone(raw, REGION)
        return 0

    async def search(q: str) -> int:
        async with db.unit_of_work() as session:
            page = await search_customers(session, q, limit=25, region=REGION)
            return len(page.items)

    async def search_hit(q: str) -> int:
        found = await search(q)
        if not found:
            raise LookupError(f"search found nothing for {q!r}")
        return found

    async def search_none(q: str) -> int:
        found = await search(q)
        if found:
            raise LookupError(f"search unexpectedly found {found} for {q!r}")
        return found

    async def card(cid: int) -> int:
        async with db.unit_of_work() as session:
            c = await customer_card(session, cid)
            return 1 + len(c.open_cases)

    results: list[Result] = []
    load_before = os.getloadavg()[0]
    print("measuring domain functions ...", flush=True)
    results.append(await measure("normalize_phone only (no database)", normalize_only, hits))
    results.append(await measure("customers_for_phone: hit, varied formats", expect_hit, hits))
    results.append(await measure("customers_for_phone: miss", expect_miss, misses))
    results.append(
        await measure("customers_for_phone: hit", expect_hit, hits, concurrency=16, warmup=0)
    )
    searches = [
        ("search_customers: kanji surname (佐藤)", q_kanji_sur),
        ("search_customers: kanji full name (佐藤太郎)", q_kanji_full),
        ("search_customers: katakana surname (サトウ)", q_kata_sur),
        ("search_customers: hiragana full name (さとうたろう)", q_hira_full),
        ("search_customers: English surname prefix (smith)", q_en),
        ("search_customers: email address", q_email),
        ("search_customers: phone number, varied formats", q_phone),
    ]
    for label, queries in searches:
        results.append(await measure(label, search_hit, queries, warmup=50))
    no_match = [
        ("search_customers: no match, 2 kanji (鷹鶴)", q_none_2),
        ("search_customers: no match, 4 kanji (鷹鶴亀龍)", q_none_4),
    ]
    for label, queries in no_match:
        results.append(await measure(label, search_none, queries, warmup=50))
    results.append(await measure("customer_card", card, card_ids))

    plans = []
    if args.explain:
        plans.append(
            await explain(db, capture, "customers_for_phone (hit)", lambda: phone_lookup(hits[0]))
        )
        plans.append(
            await explain(
                db, capture, "customers_for_phone (miss)", lambda: phone_lookup(misses[0])
            )
        )
        for label, queries in searches + no_match:
            plans.append(await explain(db, capture, label, lambda q=queries[0]: search(q)))
        plans.append(await explain(db, capture, "customer_card", lambda: card(card_ids[0])))
    await db.dispose()

    print("measuring HTTP ...", flush=True)
    headers = {"Authorization": f"Bearer {token}"}
    settings = Settings(
        data_dir=work_dir / "data",
        database_url=url,
        secret_key=SECRET,
        cti_token="bench-cti",
        mail_token="bench-mail",
    )

    def http_calls(client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        async def lookup(raw: str) -> int:
            r = await client.get("/api/lookup", params={"phone": raw})
            if r.status_code != 200:
                raise LookupError(f"{r.status_code} {r.text[:200]}")
            return len(r.json()["customers"])

        async def listing(q: str) -> int:
            r = await client.get("/api/customers", params={"q": q})
            if r.status_code != 200:
                raise LookupError(f"{r.status_code} {r.text[:200]}")
            return len(r.json()["items"])

        async def get(cid: int) -> int:
            r = await client.get(f"/api/customers/{cid}")
            if r.status_code != 200:
                raise LookupError(f"{r.status_code} {r.text[:200]}")
            return 1

        return lookup, listing, get

    app = create_app(settings, url, pool_size=POOL_SIZE)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            lookup, _, _ = http_calls(client)
            results.append(await measure("in-process ASGI GET /api/lookup?phone=", lookup, hits))

    proc, base = start_server(url, work_dir / "server")
    METER.server_pid = proc.pid
    try:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=base, headers=headers, limits=limits, timeout=30, trust_env=False
        ) as client:
            lookup, listing, get = http_calls(client)
            http_hits = hits * 2 if n >= 50_000 else hits
            for c in (1, 16):
                results.append(
                    await measure(
                        "uvicorn GET /api/lookup?phone=", lookup, http_hits, concurrency=c
                    )
                )
            for c in (1, 16):
                results.append(
                    await measure(
                        "uvicorn GET /api/customers?q=<katakana surname>",
                        listing,
                        q_kata_sur,
                        concurrency=c,
                        warmup=50,
                    )
                )
            for c in (1, 16):
                results.append(
                    await measure("uvicorn GET /api/customers/{id}", get, card_ids, concurrency=c)
                )
        server_rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()

    # -- report
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()[0]
    print()
    print("=" * 100)
    print("helpdesk benchmark: customer lookup")
    print(f"command:  {shlex.join(sys.orig_argv)}")
    print(
        f"machine:  {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{platform.machine()}, {platform.system()} {platform.release()}; "
        f"1-min load average {load_before:.2f} before measuring, {load_after:.2f} after"
    )
    print(
        f"python:   {platform.python_version()}; PostgreSQL {facts['version']} "
        f"({'external: HELPDESK_BENCH_DATABASE_URL' if os.environ.get('HELPDESK_BENCH_DATABASE_URL') else 'embedded, Unix socket'}, "
        f"shared_buffers {facts['shared_buffers']})"
    )
    print(
        f"data:     {n:,} customers ({len(ds.live_ids):,} live, {ds.merged:,} merged away), "
        f"{n_identities:,} identities ({n_phones:,} phones, "
        f"{ds.shared_numbers:,} numbers shared by several customers), {n_cases:,} cases"
    )
    print(
        f"load:     {load_s:.1f} s total = generate+normalize {gen_s:.1f} s, "
        f"COPY {load_t['copy']:.1f} s, VACUUM ANALYZE {load_t['vacuum_analyze']:.1f} s "
        f"(migrate {migrate_s:.1f} s before)"
    )
    print(
        f"db size:  {facts['db_size']}; customers {facts['customers']}, "
        f"contact_identities {facts['contact_identities']}, cases {facts['cases']} (with indexes); "
        f"ix_contact_identities_lookup {facts['ix_contact_identities_lookup']}, "
        f"ix_customers_search_text_trgm {facts['ix_customers_search_text_trgm']}"
    )
    server_part = f"; uvicorn server process {server_rss:.0f} MiB" if server_rss else ""
    print(f"peak RSS: bench process {self_rss:.0f} MiB{server_part}")
    print(
        f"inputs:   lookup variants that normalize_phone did not map to the stored number: "
        f"{mismatches} of {len(hits)}"
    )
    print()
    print(table(results))
    print()
    print(
        f"Each domain call is its own unit of work (BEGIN ... COMMIT) on a pool of {POOL_SIZE}\n"
        "connections. Each HTTP request carries a JWT, so the app also reads the revoked-token\n"
        "table and the user (a second unit of work). ops/s = measured operations / wall time.\n"
        "CPU ms per op: this bench process (the caller: domain code, or the httpx client), the\n"
        "uvicorn server process, and all PostgreSQL processes, divided by the operations."
    )
    if plans:
        print()
        print("\n".join(plans))


async def make_database(args: argparse.Namespace, work_dir: Path):  # type: ignore[no-untyped-def]
    external = os.environ.get("HELPDESK_BENCH_DATABASE_URL")
    if external:
        name = f"helpdesk_bench_{uuid.uuid4().hex[:8]}"
        admin = await raw_connect(external)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = make_url(external).set(database=name).render_as_string(False)

        async def cleanup() -> None:
            admin = await raw_connect(external)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

        return url, cleanup
    server = EmbeddedPostgres(
        work_dir / "pg", database="helpdesk_bench", server_options=SERVER_OPTIONS
    )
    print("starting embedded PostgreSQL ...", flush=True)
    url = await asyncio.to_thread(server.start)
    METER.postmaster_pid = server.postmaster_pid()

    async def stop() -> None:
        await asyncio.to_thread(server.stop)

    return url, stop


async def main_async(args: argparse.Namespace) -> None:
    work_dir = Path(tempfile.mkdtemp(prefix="helpdesk-bench-"))
    try:
        url, cleanup = await make_database(args, work_dir)
        try:
            await run(args, url, work_dir)
        finally:
            await cleanup()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="data set size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--explain", action="store_true", help="also print EXPLAIN ANALYZE of each query"
    )
    args = parser.parse_args()
    if args.customers < 200:
        parser.error("--customers must be at least 200")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
