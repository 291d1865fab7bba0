"""Phone and email normalization: every way of writing one number is one identity."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpdesk.errors import InvalidInput
from helpdesk.identities import (
    fold_text,
    format_phone,
    looks_like_phone,
    normalize_email,
    normalize_phone,
)


@pytest.mark.parametrize(
    "raw",
    [
        "03-1234-5678",
        "+81 3 1234 5678",
        "(03)1234-5678",
        "0081312345678",
        "03 1234 5678",
        "０３－１２３４－５６７８",  # full-width, as typed with a Japanese IME
        "+81-3-1234-5678",
        "010-81-3-1234-5678",
    ],
)
def test_tokyo_number_in_every_format_is_one_identity(raw: str) -> None:
    assert normalize_phone(raw, "JP") == "+81312345678"


def test_number_without_country_code_is_read_in_the_default_region() -> None:
    assert normalize_phone("(415) 555-2671", "US") == "+14155552671"
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"


@pytest.mark.parametrize("raw", ["anonymous", "Unknown", "withheld", "", "   ", "hello", "12"])
def test_withheld_and_nonsense_numbers_are_rejected_clearly(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_phone(raw, "JP")
    assert info.value.field == "phone"


def test_stored_numbers_are_shown_nationally_at_home_and_internationally_abroad() -> None:
    assert format_phone("+81312345678", "JP") == "03-1234-5678"
    assert format_phone("+14155552671", "JP").startswith("+1 415")


# Valid Japanese numbers: Tokyo and Osaka landlines, mobiles.
jp_numbers = st.one_of(
    st.tuples(st.just("3"), st.integers(1000_0000, 9999_9999).map(str)),
    st.tuples(st.just("6"), st.integers(1000_0000, 9999_9999).map(str)),
    st.tuples(st.sampled_from(["90", "80", "70"]), st.integers(1000_0000, 9999_9999).map(str)),
).map(lambda parts: parts[0] + parts[1])


def _formats(national: str) -> list[str]:
    number = phonenumbers.parse("0" + national, "JP")
    natl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    intl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    digits = "0" + national
    return [
        natl,
        intl,
        digits,
        "+81" + national,
        "0081" + national,
        natl.replace("-", " "),
        f"({digits[: len(digits) - 8]}){digits[-8:-4]}-{digits[-4:]}",
        natl.translate(str.maketrans("0123456789-", "０１２３４５６７８９－")),
    ]


@settings(max_examples=200, deadline=None)
@given(jp_numbers)
def test_all_formats_of_any_japanese_number_normalize_alike(national: str) -> None:
    results = {normalize_phone(f, "JP") for f in _formats(national)}
    assert results == {"+81" + national}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789+-() ", min_size=1, max_size=20))
@example("0000000000")  # once stored as +81000000000, which read back as +8100000000
def test_normalization_is_idempotent_or_refuses(raw: str) -> None:
    try:
        once = normalize_phone(raw, "JP")
    except InvalidInput:
        return
    assert once.startswith("+")
    assert normalize_phone(once, "JP") == once


def test_emails_fold_case_and_idn_domains() -> None:
    assert normalize_email(" Taro.Yamada@Example.CO.JP ") == "taro.yamada@example.co.jp"
    assert normalize_email("info@例え.jp") == normalize_email("INFO@xn--r8jz45g.jp")
    assert normalize_email("<someone@example.com>") == "someone@example.com"


@pytest.mark.parametrize("raw", ["", "no-at-sign", "two@@example.com", "a@b", "a b@example.com"])
def test_bad_email_addresses_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_email(raw)


def test_search_folding_makes_katakana_hiragana_and_full_width_ascii() -> None:
    assert fold_text("ヤマダ タロウ") == fold_text("やまだ たろう")
    assert fold_text("ＡＢＣ") == "abc"


def test_search_box_tells_phone_numbers_from_names() -> None:
    assert looks_like_phone("03-1234-5678")
    assert looks_like_phone("+81 3 1234 5678")
    assert not looks_like_phone("山田")
    assert not looks_like_phone("1001")
