"""Contact identities: how a raw phone number or address becomes one comparable value,
and how a customer is found from it.

Every channel (the CTI bridge, inbound mail, the chat widget, the search box) goes through
these functions, so `03-1234-5678` typed by an agent and `+81312345678` sent by a PBX are the
same identity.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.errors import InvalidInput
from helpdesk.models import ContactIdentity, Customer

WITHHELD = frozenset({"anonymous", "unknown", "private", "withheld", "restricted", "unavailable"})
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KATAKANA = {chr(c): chr(c - 0x60) for c in range(0x30A1, 0x30F7)}


def normalize_phone(raw: str, region: str = "JP") -> str:
    """E.164 form of a phone number written any way a person or a PBX writes it.

    Numbers without a country code are read in `region`. A leading `00` is taken as an
    international prefix even where the region's own prefix differs (Japan dials 010), since
    that is how such numbers arrive from abroad and from many PBXs.
    Raises InvalidInput for text that is no phone number, and for withheld numbers.
    """
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if not text:
        raise InvalidInput("phone number is empty", field="phone")
    if text.lower() in WITHHELD:
        raise InvalidInput("the number is withheld", field="phone")
    digits = re.sub(r"[^\d+]", "", text)
    candidates = [text]
    if digits.startswith("00") and not digits.startswith("000"):
        candidates.append("+" + digits[2:])
    best: phonenumbers.PhoneNumber | None = None
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            best = number
            break
        if best is None and phonenumbers.is_possible_number(number):
            best = number
    if best is None:
        raise InvalidInput(f"not a phone number: {raw!r}", field="phone")
    e164 = phonenumbers.format_number(best, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(best) and not _round_trips(e164):
        # Only "possible" and kept by its leading zeros (0000000000 -> +81000000000, which
        # reads back as +8100000000): a stored form must stay itself when normalized again.
        raise InvalidInput(f"not a phone number: {raw!r}", field="phone")
    return e164


def _round_trips(e164: str) -> bool:
    try:
        again = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(again, phonenumbers.PhoneNumberFormat.E164) == e164


def format_phone(e164: str, region: str = "JP") -> str:
    """How to show a stored number: national format at home, international otherwise."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    if phonenumbers.region_code_for_number(number) == region:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalize_email(raw: str) -> str:
    """Lower-cased address with its domain in IDNA (punycode) form.

    `Taro@例え.jp` and `taro@xn--r8jz45g.jp` are one identity. The local part is lower-cased
    too: in practice no mail system distinguishes case there, and customers type it every way.
    """
    text = unicodedata.normalize("NFKC", raw or "").strip().strip("<>").strip()
    if not _EMAIL_RE.match(text):
        raise InvalidInput(f"not an email address: {raw!r}", field="email")
    local, _, domain = text.rpartition("@")
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidInput(f"invalid email domain: {domain!r}", field="email") from exc
    return f"{local.lower()}@{ascii_domain.lower()}"


def normalize_identity(kind: str, raw: str, region: str = "JP") -> str:
    if kind == "phone":
        return normalize_phone(raw, region)
    if kind == "email":
        return normalize_email(raw)
    value = unicodedata.normalize("NFKC", raw or "").strip()
    if not value:
        raise InvalidInput(f"{kind} identity is empty", field=kind)
    return value


def looks_like_phone(text: str) -> bool:
    """Whether a search box entry is meant as a phone number rather than a name."""
    folded = unicodedata.normalize("NFKC", text).strip()
    return bool(re.fullmatch(r"[\d\s()+\-.]{6,}", folded)) and sum(c.isdigit() for c in folded) >= 6


def fold_text(text: str) -> str:
    """Fold text for search: NFKC (full-width to half-width), lower case, katakana as hiragana."""
    folded = unicodedata.normalize("NFKC", text or "").lower()
    return "".join(_KATAKANA.get(ch, ch) for ch in folded)


@dataclass(frozen=True)
class PhoneMatch:
    customer_id: int
    name: str
    name_kana: str | None
    organization: str | None
    tier: str

    def as_json(self) -> dict[str, object]:
        """How a match is shown: in the lookup API and on a screen-pop's chooser."""
        return {
            "id": self.customer_id,
            "name": self.name,
            "name_kana": self.name_kana,
            "organization": self.organization,
            "tier": self.tier,
            "url": f"/customers/{self.customer_id}",
        }


async def customers_for_phone(
    session: AsyncSession, raw_phone: str, region: str = "JP"
) -> list[PhoneMatch]:
    """Every live customer holding this phone number: one index lookup.

    Several customers can share an office number; merged-away customers never match.
    """
    normalized = normalize_phone(raw_phone, region)
    rows = await session.execute(_PHONE_OWNERS, {"normalized": normalized})
    return [PhoneMatch(*row) for row in rows.all()]


# Built once: the screen-pop runs it on every ring, and building costs more than running.
_PHONE_OWNERS = (
    select(Customer.id, Customer.name, Customer.name_kana, Customer.organization, Customer.tier)
    .join(ContactIdentity, ContactIdentity.customer_id == Customer.id)
    .where(
        ContactIdentity.kind == "phone",
        ContactIdentity.normalized == bindparam("normalized"),
        Customer.merged_into_id.is_(None),
    )
    .order_by(Customer.id)
)


async def customers_for_identity(
    session: AsyncSession, kind: str, raw: str, region: str = "JP"
) -> list[Customer]:
    normalized = normalize_identity(kind, raw, region)
    result = await session.scalars(
        select(Customer)
        .join(ContactIdentity, ContactIdentity.customer_id == Customer.id)
        .where(
            ContactIdentity.kind == kind,
            ContactIdentity.normalized == normalized,
            Customer.merged_into_id.is_(None),
        )
        .order_by(Customer.id)
    )
    return list(result.unique())
