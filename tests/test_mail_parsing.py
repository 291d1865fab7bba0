"""Email parsing on a corpus of real-looking messages (tests/data/mail/); no database.

Each corpus message has one test that pins down what an agent would see: the decoded subject
and sender, the body text in the right charset, threading ids, attachments, bounce and
auto-reply flags. Broken messages must still yield a ParsedMail with their problems listed.
"""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.mail.parsing import (
    MAX_MESSAGE_BYTES,
    MAX_PARTS,
    Bounce,
    ParsedMail,
    parse_message,
    split_quoted,
)
from tests.mailcorpus import attachment_payload, large_attachment_message, load, names

JST = timezone(timedelta(hours=9))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def simple(headers: str, body: bytes = b"Hello\r\n") -> bytes:
    """A small message from header lines written with \\n."""
    return headers.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def errors_mentioning(mail: ParsedMail, fragment: str) -> list[str]:
    return [e for e in mail.parse_errors if fragment in e]


# --- the corpus -------------------------------------------------------------------------------


def test_corpus_is_stored_with_crlf_line_endings() -> None:
    for name in names():
        raw = load(name)
        assert raw.count(b"\n") == raw.count(b"\r\n"), name


def test_outlook_reply_in_cp50220_iso_2022_jp() -> None:
    mail = parse_message(load("outlook_reply"))

    assert mail.parse_errors == ()
    assert mail.subject == "RE: お問い合わせ：請求書について"
    assert mail.from_name == "山田 太郎"
    assert mail.from_address == "taro.yamada@example.co.jp"
    assert mail.to == ("support@helpdesk.example.com",)
    assert mail.message_id == (
        "TYCPR01MB8532D1E6A0A2C4F1B5C1E2A3B4@TYCPR01MB8532.jpnprd01.prod.outlook.com"
    )
    assert mail.in_reply_to == ("reply-1042-2.1736126130@helpdesk.example.com",)
    assert mail.references == (
        "case-1042.1736126100@helpdesk.example.com",
        "reply-1042-2.1736126130@helpdesk.example.com",
    )
    assert mail.date == datetime(2025, 1, 6, 1, 32, 9, tzinfo=UTC)
    # ① and ㈱ are NEC extension rows Outlook writes inside "ISO-2022-JP".
    assert "ご回答ありがとうございます。①の請求書の件、承知いたしました。\n" in mail.text
    assert "㈱ヤマダ商会 経理部" in mail.text
    assert mail.html is not None
    assert "<b>差出人:</b> サポート窓口" in mail.html
    assert "①の請求書の件" in mail.html
    assert "<script" not in mail.html and "alert" not in mail.html
    assert mail.headers["X-Mailer"] == "Microsoft Outlook 16.0"
    assert mail.headers["Subject"] == "RE: お問い合わせ：請求書について"
    assert not mail.auto_submitted and mail.bounce is None and mail.attachments == ()

    new, folded = split_quoted(mail.text)
    assert new.endswith("山田 太郎\n㈱ヤマダ商会 経理部")
    assert folded.startswith("差出人: サポート窓口 <support@helpdesk.example.com>\n送信日時:")
    assert folded.endswith("サポート窓口")


def test_gmail_reply_with_wrapped_attribution() -> None:
    mail = parse_message(load("gmail_reply"))

    assert mail.parse_errors == ()
    assert mail.subject == "Re: Invoice INV-2025-0042"
    assert mail.from_name == "鈴木花子"
    assert mail.from_address == "hanako.suzuki@gmail.com"
    assert mail.cc == ("accounting@example.org",)
    assert mail.message_id == "CAF3k9xQ+uXr7mN0pT2e_Yb6dWq1Zs8LkVhJ4cR5nA9oE7gU3iw@mail.gmail.com"
    assert mail.in_reply_to == ("reply-77-1.1736125500@helpdesk.example.com",)
    assert mail.date == datetime(2025, 1, 6, 11, 2, 29, tzinfo=JST)
    assert mail.text.startswith("Hi,\n\nThanks, the corrected invoice arrived.")
    assert mail.html is not None and "<blockquote>Hello Hanako," in mail.html

    new, folded = split_quoted(mail.text)
    assert new == (
        "Hi,\n\nThanks, the corrected invoice arrived. One more question: can I pay by bank\n"
        "transfer instead of card?\n\nBest regards,\nHanako"
    )
    assert folded.startswith("On Mon, Jan 6, 2025 at 10:15 AM Example Support")
    assert "> We have re-sent the invoice INV-2025-0042" in folded


def test_apple_mail_reply_with_inline_image() -> None:
    mail = parse_message(load("apple_mail_reply"))

    assert mail.parse_errors == ()
    assert mail.subject == "Re: ログインできません"
    assert mail.from_name == "鈴木 一郎"
    assert mail.from_address == "ichiro.suzuki@example.jp"
    assert mail.references == (
        "case-88.1736126900@helpdesk.example.com",
        "reply-88-1.1736127300@helpdesk.example.com",
    )
    assert mail.text.startswith(
        "お世話になっております。\n\n画面のスクリーンショットを添付します。"
    )
    [image] = mail.attachments
    assert image.filename == "スクリーンショット 2025-01-06 10.40.12.png"  # RFC 2231, UTF-8
    assert image.content_type == "image/png"
    assert image.content_id == "3F1C2B7A-9D4E-4A6B-8C2D-1E5F7A9B0C3D@example.jp"
    assert image.inline is True
    assert image.data.startswith(PNG_SIGNATURE) and len(image.data) == 69
    # The ingest service rewrites cid: links after storing the file, so they stay as sent.
    assert mail.html is not None
    assert 'src="cid:3F1C2B7A-9D4E-4A6B-8C2D-1E5F7A9B0C3D@example.jp"' in mail.html

    new, folded = split_quoted(mail.text)
    assert new.endswith("ログイン後にこのエラーが表示されます。\n\n鈴木")
    assert folded.startswith(
        "2025/01/06 10:15、サポート窓口 <support@helpdesk.example.com>のメール:"
    )


def test_iso_2022_jp_message_and_split_encoded_subject() -> None:
    mail = parse_message(load("iso2022jp"))

    assert mail.parse_errors == ()
    assert mail.subject == "お問い合わせ：請求書について"  # two encoded words, folded
    assert mail.from_name == "佐藤 花子"
    assert mail.from_address == "hanako.sato@sakura-bussan.example.jp"
    assert mail.headers["X-Mailer"] == "Becky! ver. 2.81.05 [ja]"
    assert mail.text == (
        "サポートセンター御中\n\n"
        "いつもお世話になっております。\n"
        "株式会社さくら物産の佐藤でございます。\n\n"
        "先月分の請求書（請求番号　2024-12-088）の金額が、\n"
        "注文書の金額と異なっているようです。\n"
        "お手数ですが、ご確認のほどよろしくお願い申し上げます。\n\n"
        "佐藤　花子"
    )


def test_shift_jis_message_with_windows_characters() -> None:
    mail = parse_message(load("shift_jis"))

    assert mail.parse_errors == ()
    assert mail.subject == "㈱ミドリ電機より見積書送付のご案内"
    assert mail.from_name == "高橋 健"
    assert mail.from_address == "k.takahashi@midori-denki.example.jp"
    assert mail.text == (
        "ご担当者様\n\n"
        "㈱ミドリ電機 営業部の高橋です。\n"
        "下記の通りお見積書をお送りいたします。\n\n"
        "① 保守契約（年間）\n"
        "② 現地作業費\n"
        "③ 交換部品一式\n\n"
        "ご不明な点がございましたらお知らせください。"
    )
    [pdf] = mail.attachments
    assert pdf.filename == "見積書①.pdf"  # RFC 2047 inside a parameter, Shift_JIS
    assert pdf.content_type == "application/pdf"
    assert pdf.data.startswith(b"%PDF-1.4\n") and pdf.data.endswith(b"%%EOF\n")
    assert pdf.inline is False and pdf.content_id is None


def test_euc_jp_message() -> None:
    mail = parse_message(load("euc_jp"))

    assert mail.parse_errors == ()
    assert mail.subject == "配送状況の確認をお願いします"
    assert mail.from_name == "伊藤 誠"
    assert mail.from_address == "makoto.ito@example.ne.jp"
    assert mail.text == (
        "お世話になります。\n\n"
        "注文番号 A-20250103-17 の商品がまだ届いておりません。\n"
        "配送状況を確認していただけますでしょうか。\n\n"
        "伊藤"
    )


def test_forwarded_message_becomes_an_eml_attachment() -> None:
    mail = parse_message(load("forwarded"))

    assert mail.parse_errors == ()
    assert mail.subject == "Fwd: ご注文の発送のお知らせ #1234"
    assert mail.headers["User-Agent"] == "Mozilla Thunderbird"
    # format=flowed: the soft line break is joined again.
    assert mail.text == (
        "The parcel did not contain what I ordered. I am forwarding the shipping notice; "
        "could you check order 1234?\n\n森"
    )
    assert "発送いたしました" not in mail.text  # the forwarded body does not replace ours
    [forwarded] = mail.attachments
    assert forwarded.filename == "ご注文の発送のお知らせ #1234.eml"
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.inline is False
    inner = parse_message(forwarded.data)
    assert inner.message_id == "order-1234-shipped@shop.example.net"
    assert inner.subject == "ご注文の発送のお知らせ #1234"
    assert "ご注文いただいた商品を発送いたしました。" in inner.text


def test_postfix_delivery_status_bounce() -> None:
    mail = parse_message(load("bounce_dsn"))

    assert mail.parse_errors == ()
    assert mail.from_address == "mailer-daemon@mx.helpdesk.example.com"
    assert mail.from_name == "Mail Delivery System"
    assert mail.subject == "Undelivered Mail Returned to Sender"
    assert mail.auto_submitted is True
    assert mail.bounce == Bounce(
        recipients=("someone@example.jp",),
        status="5.1.1",
        diagnostic=(
            "550 5.1.1 <someone@example.jp>: Recipient address rejected: "
            "User unknown in local recipient table"
        ),
        permanent=True,
        original_message_id="reply-1050-1.1736236800@helpdesk.example.com",
    )
    assert mail.text.startswith("This is the mail system at host mx.helpdesk.example.com.")
    [returned] = mail.attachments
    assert returned.filename == "[#1050] Re: Order status.eml"
    assert parse_message(returned.data).in_reply_to == ("customer-question-1050@example.jp",)


def test_bounce_from_postmaster_without_multipart_report() -> None:
    mail = parse_message(load("bounce_nonstandard"))

    assert mail.bounce == Bounce(
        recipients=("full.box@example.co.jp",),
        status="4.2.2",
        diagnostic="Mailbox quota exceeded",
        permanent=False,
        original_message_id="reply-1061-3.1736240000@helpdesk.example.com",
    )
    assert mail.auto_submitted is True
    assert mail.text == (
        "The original message was received but could not be delivered:\nmailbox is full."
    )


def test_delivery_status_part_from_an_ordinary_sender_is_not_a_bounce() -> None:
    raw = load("bounce_nonstandard").replace(b"Postmaster@gw", b"helpdesk-user@gw")
    mail = parse_message(raw)
    assert mail.from_address == "helpdesk-user@gw.example.co.jp"
    assert mail.bounce is None


def test_japanese_out_of_office_auto_reply() -> None:
    mail = parse_message(load("auto_reply"))

    assert mail.parse_errors == ()
    assert mail.auto_submitted is True
    assert mail.bounce is None
    assert mail.subject == "自動応答: お問い合わせ：請求書について"
    assert mail.from_name == "木村 由美"
    assert mail.in_reply_to == ("reply-1044-1.1736242000@helpdesk.example.com",)
    assert mail.text == (
        "誠に勝手ながら、1月6日から1月10日まで休暇をいただいております。\n"
        "期間中にいただいたメールは、1月14日以降に順次対応いたします。\n\n"
        "お急ぎの場合は、support-urgent@example.co.jp までご連絡ください。"
    )


def test_mailing_list_post() -> None:
    mail = parse_message(load("mailing_list"))

    assert mail.parse_errors == ()
    assert mail.auto_submitted is True
    assert mail.from_address == "announce@lists.example.org"
    assert mail.reply_to == ("discuss@lists.example.org",)
    assert mail.date == datetime(2025, 1, 7, 22, 0, tzinfo=UTC)
    assert split_quoted(mail.text) == (
        "Release 3.2.0 is out. Highlights:\n\n * faster search\n * new export formats",
        "--\nannounce mailing list\nhttps://lists.example.org/announce",
    )


def test_broken_mime_still_yields_text_and_attachment() -> None:
    mail = parse_message(load("broken_mime"))

    assert errors_mentioning(mail, "malformed header line")
    assert errors_mentioning(mail, "close boundary")
    assert errors_mentioning(mail, "part 1 (text/plain): bytes not valid in charset utf-8")
    assert errors_mentioning(mail, "part 2 (application/pdf): truncated base64")
    # The garbage line sat in the middle of the headers; the ones after it still count.
    assert mail.message_id == "broken-0001@legacy-mailer.example.net"
    assert mail.date == datetime(2025, 1, 8, 9, 0, tzinfo=JST)
    assert mail.subject == "Invoice attached"
    assert mail.text == (
        "Hello, the invoice is attached.\n"
        "Broken bytes: \ufffd and \ufffd\ufffd here.\n"
        "よろしくお願いします。"
    )
    [pdf] = mail.attachments
    assert pdf.filename == "invoice.pdf"
    assert pdf.data.startswith(b"%PDF-1.4\n%")  # what the truncated base64 still held


def test_boundary_that_never_appears() -> None:
    mail = parse_message(load("broken_boundary"))

    assert errors_mentioning(mail, "start boundary was never found")
    assert mail.subject == "Contact form submission"
    assert "Message: The download link in my receipt does not work." in mail.text


def test_text_that_is_not_a_message_at_all() -> None:
    raw = load("not_a_message")
    mail = parse_message(raw)

    assert mail.parse_errors
    assert mail.from_address == "" and mail.subject == "" and mail.date is None
    assert mail.message_id == f"sha256-{hashlib.sha256(raw).hexdigest()}@helpdesk.invalid"
    assert mail.text.startswith("Hello support,\nmy order 1234 never arrived. 注文番号 1234 です。")
    assert mail.text.endswith("\ufffd trailing junk")


def test_message_without_message_id_gets_a_stable_hash_id() -> None:
    raw = load("no_message_id")
    mail = parse_message(raw)

    assert mail.parse_errors == ()
    assert mail.message_id == f"sha256-{hashlib.sha256(raw).hexdigest()}@helpdesk.invalid"
    assert parse_message(raw).message_id == mail.message_id  # a redelivery is a duplicate
    assert parse_message(raw + b"\r\n").message_id != mail.message_id
    assert mail.from_name == "" and mail.from_address == "scanner@office.example.com"
    assert mail.date == datetime(2025, 1, 8, 11, 0, tzinfo=UTC)  # no zone given: UTC
    assert "Message-ID" not in mail.headers
    assert mail.text == "Scanned from MFP-3F. 2 pages."


def test_html_only_message_gets_plain_text_and_sanitized_html() -> None:
    mail = parse_message(load("html_only"))

    assert mail.parse_errors == ()
    assert mail.subject == "【お問い合わせ】返品について"
    assert mail.reply_to == ("nakamura@example.jp",)
    assert mail.text == (
        "新しいお問い合わせ\n"
        "お名前: 中村 様\n"
        "電話番号: 03-1234-5678\n\n"
        "内容:\n\n"
        "> 返品の手続きを教えてください。\n"
        "管理画面で見る"
    )
    assert mail.html is not None
    assert mail.html.startswith("<h1>新しいお問い合わせ</h1>")
    assert "onclick" not in mail.html and "color:red" not in mail.html
    assert "Notification" not in mail.html  # <title> text does not leak into the body


@pytest.mark.parametrize("name", names())
def test_every_corpus_message_parses_cleanly_or_says_why(name: str) -> None:
    mail = parse_message(load(name))
    broken = name.startswith(("broken_", "not_a_"))
    assert bool(mail.parse_errors) is broken
    assert mail.text.strip()
    assert mail.message_id and "<" not in mail.message_id


# --- headers ----------------------------------------------------------------------------------


def test_multibyte_character_split_across_encoded_words() -> None:
    data = "請求書の件".encode()
    first, second = base64.b64encode(data[:4]).decode(), base64.b64encode(data[4:]).decode()
    mail = parse_message(simple(f"Subject: =?UTF-8?B?{first}?=\n =?UTF-8?B?{second}?="))
    assert mail.subject == "請求書の件"
    assert mail.parse_errors == ()


def test_encoded_and_plain_words_mixed_keep_their_spaces() -> None:
    word = base64.b64encode("山田".encode()).decode()
    mail = parse_message(
        simple(f'From: "=?utf-8?B?{word}?= Taro" <T@Example.JP>\nSubject: Re:   a\tb')
    )
    assert mail.from_name == "山田 Taro"
    assert mail.from_address == "t@example.jp"
    assert mail.subject == "Re: a b"


def test_raw_8bit_headers_are_guessed() -> None:
    raw = "From: 山田 <yamada@example.jp>\r\nSubject: 見積の件\r\n\r\nbody\r\n".encode().replace(
        "見積の件".encode(), "見積の件".encode("cp932")
    )
    mail = parse_message(raw)
    assert mail.from_name == "山田"
    assert mail.subject == "見積の件"


def test_rfc2231_shift_jis_filename_and_missing_filename() -> None:
    name = "".join(f"%{b:02X}" for b in "請求書①.xlsx".encode("cp932"))
    raw = simple(
        'From: a@example.jp\nContent-Type: multipart/mixed; boundary="b"',
        (
            "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            "--b\r\nContent-Type: application/vnd.ms-excel\r\n"
            f"Content-Disposition: attachment; filename*=shift_jis''{name}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n"
            "--b\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n/9j/4A==\r\n"
            "--b\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="..\\\\..\\\\evil/../x.exe"\r\n\r\nMZ\r\n'
            # Raw UTF-8 in the header, as some webmail sends it.
            '--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename="注文一覧.csv"'
            "\r\n\r\nid,qty\r\n"
            "--b--\r\n"
        ).encode(),
    )
    mail = parse_message(raw)
    assert mail.parse_errors == ()
    assert [a.filename for a in mail.attachments] == [
        "請求書①.xlsx",
        "attachment-2.jpg",
        "x.exe",
        "注文一覧.csv",
    ]
    assert mail.attachments[0].data == b"PK\x03\x04"
    assert mail.text == "see attached"


def test_address_lists_skip_groups_and_garbage() -> None:
    mail = parse_message(
        simple(
            'From: "Yamada, Taro" <Taro@Example.jp>\n'
            "To: undisclosed-recipients:;\n"
            "Cc: a@example.jp, , not an address, B <b@example.jp>, a@example.jp"
        )
    )
    assert mail.from_name == "Yamada, Taro"
    assert mail.from_address == "taro@example.jp"
    assert mail.to == ()
    assert mail.cc == ("a@example.jp", "b@example.jp")


def test_unparseable_from_is_empty_and_reported() -> None:
    mail = parse_message(simple("From: just a name\nSubject: x"))
    assert mail.from_address == ""
    assert errors_mentioning(mail, "From header")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Date: Tue, 07 Jan 2025 09:12:40 +0900", datetime(2025, 1, 7, 9, 12, 40, tzinfo=JST)),
        ("Date: Tue, 07 Jan 2025 09:12:40 JST", datetime(2025, 1, 7, 9, 12, 40, tzinfo=JST)),
        ("Date: Tue, 07 Jan 2025 00:12:40 -0000", datetime(2025, 1, 7, 0, 12, 40, tzinfo=UTC)),
        ("Date: 7 Jan 2025 00:12:40", datetime(2025, 1, 7, 0, 12, 40, tzinfo=UTC)),
        ("Date: yesterday afternoon", None),
        ("X-No-Date: 1", None),
    ],
)
def test_dates(header: str, expected: datetime | None) -> None:
    mail = parse_message(simple(f"From: a@example.jp\n{header}"))
    assert mail.date == expected
    if mail.date is not None:
        assert mail.date.tzinfo is not None
    assert bool(errors_mentioning(mail, "Date header")) is (header == "Date: yesterday afternoon")


def test_message_ids_without_brackets_and_malformed() -> None:
    mail = parse_message(simple("Message-ID: abc123@example.jp\nIn-Reply-To: x@y (comment)"))
    assert mail.message_id == "abc123@example.jp"
    assert mail.in_reply_to == ("x@y",)
    broken = simple("Message-ID: <<>>")
    mail = parse_message(broken)
    assert mail.message_id == f"sha256-{hashlib.sha256(broken).hexdigest()}@helpdesk.invalid"
    assert errors_mentioning(mail, "Message-ID header is malformed")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated; owner-email=x@example.jp", True),
        ("Auto-Submitted: no", False),
        ("Precedence: bulk", True),
        ("Precedence: junk", True),
        ("Precedence: list", True),
        ("Precedence: first-class", False),
        ("X-Auto-Response-Suppress: OOF", True),
        ("List-Id: <users.lists.example.org>", True),
        ("X-Autoreply: yes", True),
        ("X-Autorespond: Out of office", True),
        ("X-Mailer: Thunderbird", False),
    ],
)
def test_auto_submitted_headers(header: str, expected: bool) -> None:
    assert parse_message(simple(f"From: a@example.jp\n{header}")).auto_submitted is expected


# --- bodies and charsets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        # Windows-only characters under the standard label.
        ("iso-2022-jp", b"\x1b$B-!-j\x1b(B", "①㈱"),
        # Half-width katakana in ISO-2022-JP (CP50221's ESC ( I).
        ("ISO-2022-JP", b"\x1b(I6@6E\x1b(B", "ｶﾀｶﾅ"),
        ("Shift_JIS", "①㈱～".encode("cp932"), "①㈱～"),
        ("EUC-JP", "①㈱".encode("euc_jis_2004"), "①㈱"),
        # An 8-bit body labelled ISO-2022-JP is really Shift_JIS.
        ("iso-2022-jp", "テスト".encode("cp932"), "テスト"),
        # Unlabelled ISO-2022-JP, EUC-JP and Shift_JIS are recognized by their bytes.
        (None, "テスト".encode("iso2022_jp"), "テスト"),
        (None, "日本語テキスト".encode("euc_jp"), "日本語テキスト"),
        (None, "日本語①".encode("cp932"), "日本語①"),
        # A web form sending Shift_JIS under "utf-8".
        ("utf-8", "日本語テキスト".encode("cp932"), "日本語テキスト"),
    ],
)
def test_japanese_charsets_and_mislabels(charset: str | None, body: bytes, expected: str) -> None:
    content_type = f"text/plain; charset={charset}" if charset else "text/plain"
    mail = parse_message(simple(f"From: a@example.jp\nContent-Type: {content_type}", body))
    assert mail.text == expected


def test_broken_utf8_is_replaced_and_reported() -> None:
    mail = parse_message(
        simple("Content-Type: text/plain; charset=utf-8", "日本語".encode() + b"\xe3\x81\r\n")
    )
    assert mail.text == "日本語\ufffd"
    assert errors_mentioning(mail, "bytes not valid in charset utf-8")


def test_unknown_charset_is_reported() -> None:
    mail = parse_message(simple("Content-Type: text/plain; charset=x-klingon", b"Qapla'\r\n"))
    assert mail.text == "Qapla'"
    assert errors_mentioning(mail, "unknown charset 'x-klingon'")


def test_multipart_without_boundary_parameter() -> None:
    mail = parse_message(simple("Content-Type: multipart/mixed", b"plain words\r\n"))
    assert mail.text == "plain words"
    assert errors_mentioning(mail, "no boundary parameter")


def test_text_parts_of_a_mixed_message_are_joined_in_order() -> None:
    raw = simple(
        'Content-Type: multipart/mixed; boundary="m"',
        b"--m\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        b"--m\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PNG_SIGNATURE) + b"\r\n"
        b"--m\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--m--\r\n",
    )
    mail = parse_message(raw)
    assert mail.text == "first\nsecond"
    [image] = mail.attachments
    assert image.inline is True and image.filename == "attachment-1.png"
    assert image.data == PNG_SIGNATURE


def test_empty_message() -> None:
    mail = parse_message(b"")
    assert mail.text == ""
    assert mail.parse_errors == ("message is empty",)
    assert mail.message_id == f"sha256-{hashlib.sha256(b'').hexdigest()}@helpdesk.invalid"


# --- limits -----------------------------------------------------------------------------------


def test_oversize_message_keeps_headers_but_skips_the_body() -> None:
    head = simple("From: Big <big@example.jp>\nSubject: huge\nMessage-ID: <huge@example.jp>", b"")
    raw = head + b"x" * (MAX_MESSAGE_BYTES - len(head) + 1)
    mail = parse_message(raw)
    assert errors_mentioning(mail, f"message exceeds {MAX_MESSAGE_BYTES} bytes")
    assert mail.subject == "huge"
    assert mail.from_address == "big@example.jp"
    assert mail.message_id == "huge@example.jp"
    assert mail.text == "" and mail.attachments == () and mail.html is None


def test_message_of_exactly_the_limit_is_parsed() -> None:
    head = simple("Subject: at the limit", b"")
    mail = parse_message(head + b"y" * (MAX_MESSAGE_BYTES - len(head)))
    assert not errors_mentioning(mail, "exceeds")
    assert mail.text.startswith("yyyy")


def test_too_many_parts_stops_the_walk() -> None:
    parts = b"".join(
        b"--p\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=f%d.bin\r\n\r\nx\r\n" % i
        for i in range(MAX_PARTS + 50)
    )
    raw = simple(
        'Content-Type: multipart/mixed; boundary="p"',
        b"--p\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n" + parts + b"--p--\r\n",
    )
    mail = parse_message(raw)
    assert errors_mentioning(mail, f"more than {MAX_PARTS} MIME parts")
    assert mail.text == "first part"
    # The root, the text part and the attachments make up the parts walked.
    assert len(mail.attachments) == MAX_PARTS - 2
    assert mail.attachments[-1].filename == f"f{MAX_PARTS - 3}.bin"


def test_ten_megabyte_attachment_is_preserved_exactly() -> None:
    size = 10 * 1024 * 1024
    mail = parse_message(large_attachment_message(size))
    assert mail.parse_errors == ()
    assert mail.text == "The signed contract is attached."
    [scan] = mail.attachments
    assert scan.filename == "scan.pdf"
    assert len(scan.data) == size
    assert scan.data == attachment_payload(size)


# --- never raises -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    mail = parse_message(raw)
    assert isinstance(mail, ParsedMail)
    assert "\x00" not in mail.text


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(names()), st.randoms(use_true_random=False))
def test_damaged_corpus_messages_never_raise(name: str, rng: random.Random) -> None:
    raw = bytearray(load(name))
    for _ in range(rng.randint(1, 12)):
        pos = rng.randrange(len(raw))
        choice = rng.random()
        if choice < 0.4:
            raw[pos] = rng.randrange(256)
        elif choice < 0.7:
            del raw[pos : pos + rng.randint(1, 40)]
        else:
            raw[pos:pos] = rng.choice([b"=?", b"?=", b"=?utf-8?B?", b"\x1b$B", b"--", b"\r\n\r\n"])
    mail = parse_message(bytes(raw))
    # Everything must be storable in PostgreSQL text columns.
    for value in (mail.text, mail.subject, mail.from_name, *mail.parse_errors):
        value.encode("utf-8")
        assert "\x00" not in value


# --- split_quoted -----------------------------------------------------------------------------

QUOTE_STYLES = {
    "outlook english": (
        "Thanks, that works.\n\nKen\n\n-----Original Message-----\n"
        "From: Support <support@helpdesk.example.com>\nSent: Monday, January 6, 2025 10:15 AM\n"
        "To: Ken <ken@example.com>\nSubject: RE: Login\n\nPlease try again.",
        "Thanks, that works.\n\nKen",
        "-----Original Message-----",
    ),
    "outlook header block after a rule": (
        "Confirmed.\n\n________________________________\n"
        "From: Support <support@helpdesk.example.com>\nSent: Monday, January 6, 2025 10:15\n"
        "To: Ken\nSubject: Login\n\nPlease try again.",
        "Confirmed.",
        "________________________________\nFrom: Support",
    ),
    "outlook japanese": (
        "承知しました。\n\n差出人: サポート窓口 <support@helpdesk.example.com>\n"
        "送信日時: 2025年1月6日 10:15\n宛先: 山田 太郎\n件名: RE: 請求書\n\n山田様",
        "承知しました。",
        "差出人: サポート窓口",
    ),
    "outlook japanese full-width colons": (
        "承知しました。\n\n差出人： サポート窓口\n送信日時： 2025年1月6日 10:15\n\n山田様",
        "承知しました。",
        "差出人： サポート窓口",
    ),
    "gmail english": (
        "Sounds good.\n\nOn Mon, Jan 6, 2025 at 10:15 AM Support <support@helpdesk.example.com> "
        "wrote:\n\n> Shall we call you?\n>\n",
        "Sounds good.",
        "On Mon, Jan 6, 2025 at 10:15 AM Support",
    ),
    "gmail japanese": (
        "よろしくお願いします。\n\n2025年1月6日(月) 10:15 サポート窓口 <support@helpdesk.example.com>:\n\n"
        "> お電話してもよろしいですか。\n",
        "よろしくお願いします。",
        "2025年1月6日(月) 10:15 サポート窓口",
    ),
    "apple mail english": (
        "Attached.\n\n> On Jan 6, 2025, at 10:15, Support <support@helpdesk.example.com> wrote:\n"
        ">\n> Could you send a screenshot?\n",
        "Attached.",
        "> On Jan 6, 2025, at 10:15",
    ),
    "apple mail japanese": (
        "添付します。\n\n2025/01/06 10:15、サポート窓口 <support@helpdesk.example.com>のメール:\n\n"
        "> スクリーンショットをお送りください。\n",
        "添付します。",
        "2025/01/06 10:15、サポート窓口",
    ),
    "thunderbird japanese": (
        "了解です。\n\n2025/01/06 10:15 に サポート窓口 が書きました:\n> 確認します。\n",
        "了解です。",
        "2025/01/06 10:15 に サポート窓口 が書きました:",
    ),
    "japanese wrote form": (
        "了解です。\n\nサポート窓口 さんは書きました：\n> 確認します。\n",
        "了解です。",
        "サポート窓口 さんは書きました：",
    ),
    "quoted tail without attribution": (
        "Yes, please.\n\n> Shall we replace the unit?\n> It is under warranty.\n",
        "Yes, please.",
        "> Shall we replace the unit?",
    ),
    "signature": (
        "See you tomorrow.\n-- \nTaro Yamada\nYamada Trading\n",
        "See you tomorrow.",
        "-- \nTaro Yamada",
    ),
    "signature above outlook history": (
        "OK.\n-- \nKen\n\n-----Original Message-----\nFrom: Support\nSent: today\n\nHi",
        "OK.",
        "-- \nKen",
    ),
}


@pytest.mark.parametrize("style", QUOTE_STYLES)
def test_split_quoted_client_styles(style: str) -> None:
    text, expected_new, folded_start = QUOTE_STYLES[style]
    new, folded = split_quoted(text)
    assert new == expected_new
    assert folded.startswith(folded_start)


@pytest.mark.parametrize(
    "text",
    [
        "Just a message.\nNo history here.",
        # Interleaved answers are new text, not history.
        "On Mon, Support wrote:\n> Question one?\nAnswer one.\n> Question two?\nAnswer two.",
        # A bottom-posted answer after the quote.
        "On Mon, Support wrote:\n> Question?\n\nMy answer is below the quote.",
        # Forwarded content is what the customer wants us to read.
        "FYI\n\n---------- Forwarded message ---------\nFrom: Shop <shop@example.com>\n"
        "Date: Mon, Jan 6, 2025\nSubject: Order\n\nYour order shipped.",
        # Everything quoted: folding would leave nothing to show.
        "> only a quote\n> nothing else",
        "",
    ],
)
def test_split_quoted_leaves_text_alone(text: str) -> None:
    assert split_quoted(text) == (text, "")


def test_split_quoted_accepts_crlf() -> None:
    assert split_quoted("Yes.\r\n\r\n> Really?\r\n") == ("Yes.", "> Really?")
