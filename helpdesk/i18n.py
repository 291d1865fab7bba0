"""UI text in Japanese and English, and times in the viewer's own timezone.

Catalogs are the `.po` files under `helpdesk/locale/`, compiled in memory at start-up so no
build step is needed. Extract new strings with
`pybabel extract -F babel.cfg -o helpdesk/locale/messages.pot .` and update with
`pybabel update -i helpdesk/locale/messages.pot -d helpdesk/locale`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
SUPPORTED = ("en", "ja")
DEFAULT = "en"


def load_catalogs() -> dict[str, NullTranslations]:
    catalogs: dict[str, NullTranslations] = {"en": NullTranslations()}
    for lang in SUPPORTED:
        po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
        if not po.exists():
            continue
        with po.open("rb") as f:
            catalog = read_po(f, locale=lang)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        catalogs[lang] = Translations(fp=buf)
    return catalogs


def negotiate(preferred: str | None, accept_language: str | None) -> str:
    """The user's own setting wins; otherwise the browser's Accept-Language; else English."""
    if preferred in SUPPORTED:
        return str(preferred)
    wanted: list[tuple[float, str]] = []
    for part in (accept_language or "").split(","):
        piece = part.strip()
        if not piece:
            continue
        lang, _, q = piece.partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        wanted.append((weight, lang.strip().replace("-", "_")))
    wanted.sort(key=lambda item: -item[0])
    match = Locale.negotiate([w for _, w in wanted], list(SUPPORTED), sep="_")
    return str(match.language) if match else DEFAULT


def zone(name: str | None, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


@dataclass(frozen=True)
class Viewer:
    """How one viewer reads the page: language, gettext, and their timezone."""

    lang: str
    translations: NullTranslations
    tz: ZoneInfo

    def gettext(self, message: str, **params: object) -> str:
        text = self.translations.gettext(message)
        return text % params if params else text

    def ngettext(self, singular: str, plural: str, n: int, **params: object) -> str:
        text = self.translations.ngettext(singular, plural, n)
        return text % dict(params, num=n)

    def datetime(self, value: datetime | None, fmt: str = "medium") -> str:
        if value is None:
            return ""
        try:
            locale = Locale.parse(self.lang)
        except UnknownLocaleError:
            locale = Locale.parse(DEFAULT)
        return format_datetime(value, format=fmt, tzinfo=self.tz, locale=locale)
