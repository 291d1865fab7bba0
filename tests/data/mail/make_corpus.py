"""Regenerate the .eml files of this directory: `python tests/data/mail/make_corpus.py`.

The messages are committed as files (that is what the tests read); this script is how they
were made, kept so that a change to one is reviewable and repeatable. Charset-specific bytes
(ISO-2022-JP as Outlook writes it, Shift_JIS with Windows extensions, EUC-JP) are produced
with Python's codecs rather than typed, and every file has CRLF line endings as delivered.
"""

from __future__ import annotations

import base64
import quopri
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def crlf(data: bytes) -> bytes:
    """Bare LF to CRLF, leaving existing CRLF alone."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def b_word(text: str, charset: str, codec: str | None = None) -> str:
    """One RFC 2047 B-encoded word."""
    data = cp50220(text) if charset.lower() == "iso-2022-jp" else text.encode(codec or charset)
    return f"=?{charset}?B?{base64.b64encode(data).decode()}?="


def b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data)


def qp(data: bytes) -> bytes:
    return quopri.encodestring(data)


def cp50220(text: str) -> bytes:
    """ISO-2022-JP the way Outlook (Windows code page 50220) writes it.

    Plain JIS X 0208 text comes out exactly as from Python's iso2022_jp codec; NEC extension
    characters such as ① and ㈱ become row-13 JIS codes that Python's codecs cannot read.
    """
    out = bytearray()
    mode = "ascii"
    for char in text:
        if ord(char) < 0x80:
            if mode != "ascii":
                out += b"\x1b(B"
                mode = "ascii"
            out += char.encode("ascii")
            continue
        sjis = char.encode("cp932")
        if len(sjis) != 2:
            raise ValueError(f"{char!r} has no double-byte form")
        if mode != "jis":
            out += b"\x1b$B"
            mode = "jis"
        s1, s2 = sjis
        s1 -= 0x40 if s1 >= 0xE0 else 0
        row = (s1 - 0x81) * 2 + (1 if s2 >= 0x9F else 0) + 0x21
        cell = s2 - 0x7E if s2 >= 0x9F else s2 - 0x20 if s2 >= 0x80 else s2 - 0x1F
        out += bytes((row, cell))
    if mode != "ascii":
        out += b"\x1b(B"
    return bytes(out)


def png_pixel() -> bytes:
    """A valid 1x1 PNG, so the inline image is a real image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x1e\x90\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PDF = b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


# --- outlook_reply.eml ------------------------------------------------------------------------

OUTLOOK_TEXT = """\
サポートご担当者様

お世話になっております。ヤマダ商会の山田です。
ご回答ありがとうございます。①の請求書の件、承知いたしました。
再発行分は経理に回します。

よろしくお願いいたします。

山田 太郎
㈱ヤマダ商会 経理部

差出人: サポート窓口 <support@helpdesk.example.com>
送信日時: 2025年1月6日 10:15
宛先: 山田 太郎 <taro.yamada@example.co.jp>
件名: RE: お問い合わせ：請求書について

山田様

お問い合わせありがとうございます。
請求書を再発行いたしましたので、ご確認ください。

サポート窓口
"""

OUTLOOK_HTML = """\
<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-2022-jp">
<style><!-- p.MsoNormal {margin:0mm; font-size:10.5pt;} --></style></head>
<body lang="JA" link="#0563C1"><div class="WordSection1">
<p class="MsoNormal">サポートご担当者様</p>
<p class="MsoNormal">お世話になっております。ヤマダ商会の山田です。<br>
ご回答ありがとうございます。①の請求書の件、承知いたしました。<br>
再発行分は経理に回します。</p>
<p class="MsoNormal">よろしくお願いいたします。</p>
<div><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0mm 0mm 0mm">
<p class="MsoNormal"><b>差出人:</b> サポート窓口 &lt;support@helpdesk.example.com&gt;<br>
<b>送信日時:</b> 2025年1月6日 10:15<br><b>宛先:</b> 山田 太郎 &lt;taro.yamada@example.co.jp&gt;<br>
<b>件名:</b> RE: お問い合わせ：請求書について</p></div></div>
<p class="MsoNormal">山田様</p><p class="MsoNormal">お問い合わせありがとうございます。</p>
<script>alert("x")</script>
</div></body></html>
"""


def outlook_reply() -> bytes:
    boundary = "_000_TYCPR01MB8532D1E6A0A2C4F1B5C1E2A3B4TYCPR01MB8532jpnp_"
    subject = b_word("RE: お問い合わせ：請求書について", "iso-2022-jp")
    head = f"""\
Received: from TYCPR01MB8532.jpnprd01.prod.outlook.com (2603:1096:400:1a2::9)
 by OS3PR01MB6789.jpnprd01.prod.outlook.com with HTTPS; Mon, 6 Jan 2025
 01:32:10 +0000
Received: from mail-ty1jpn01on2101.outbound.protection.outlook.com (40.107.74.101)
 by mx.helpdesk.example.com (Postfix) with ESMTPS id 4YRb0s2kQvz9sTb
 for <support@helpdesk.example.com>; Mon,  6 Jan 2025 10:32:12 +0900 (JST)
From: {b_word("山田 太郎", "iso-2022-jp")} <Taro.Yamada@example.co.jp>
To: {b_word("サポート窓口", "iso-2022-jp")} <support@helpdesk.example.com>
Subject: {subject}
Thread-Topic: {subject}
Thread-Index: AQHbX9sT3bY2kD1lQ0e2s8m3Jc1mKbMIs3Pw
Date: Mon, 6 Jan 2025 01:32:09 +0000
Message-ID:
 <TYCPR01MB8532D1E6A0A2C4F1B5C1E2A3B4@TYCPR01MB8532.jpnprd01.prod.outlook.com>
References: <case-1042.1736126100@helpdesk.example.com>
 <reply-1042-2.1736126130@helpdesk.example.com>
In-Reply-To: <reply-1042-2.1736126130@helpdesk.example.com>
Accept-Language: ja-JP, en-US
Content-Language: ja-JP
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
X-Mailer: Microsoft Outlook 16.0
Content-Type: multipart/alternative;
	boundary="{boundary}"
MIME-Version: 1.0

--{boundary}
Content-Type: text/plain; charset="iso-2022-jp"
Content-Transfer-Encoding: 7bit

"""
    html_head = f"""
--{boundary}
Content-Type: text/html; charset="iso-2022-jp"
Content-Transfer-Encoding: quoted-printable

"""
    return crlf(
        head.encode()
        + cp50220(OUTLOOK_TEXT)
        + html_head.encode()
        + qp(cp50220(OUTLOOK_HTML))
        + f"\n--{boundary}--\n".encode()
    )


# --- gmail_reply.eml --------------------------------------------------------------------------

GMAIL_TEXT = """\
Hi,

Thanks, the corrected invoice arrived. One more question: can I pay by bank
transfer instead of card?

Best regards,
Hanako

On Mon, Jan 6, 2025 at 10:15 AM Example Support <support@helpdesk.example.com>
wrote:

> Hello Hanako,
>
> We have re-sent the invoice INV-2025-0042 with the corrected address.
>
> Kind regards,
> Example Support
>
"""

GMAIL_HTML = """\
<div dir="ltr">Hi,<div><br></div><div>Thanks, the corrected invoice arrived. One more \
question: can I pay by bank transfer instead of card?</div><div><br></div><div>Best \
regards,</div><div>Hanako</div></div><br><div class="gmail_quote gmail_quote_container">\
<div dir="ltr" class="gmail_attr">On Mon, Jan 6, 2025 at 10:15 AM Example Support &lt;\
<a href="mailto:support@helpdesk.example.com">support@helpdesk.example.com</a>&gt; wrote:<br>\
</div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid \
rgb(204,204,204);padding-left:1ex">Hello Hanako,<br><br>We have re-sent the invoice \
INV-2025-0042 with the corrected address.<br><br>Kind regards,<br>Example Support<br>\
</blockquote></div>
"""


def gmail_reply() -> bytes:
    boundary = "000000000000b8e4a2062b0a8c31"
    head = f"""\
Received: from mail-sor-f41.google.com (mail-sor-f41.google.com [209.85.220.41])
        by mx.helpdesk.example.com (Postfix) with SMTPS id 4YRb3F0xq3z9sTk
        for <support@helpdesk.example.com>; Mon,  6 Jan 2025 11:02:41 +0900 (JST)
X-Google-Smtp-Source: AGHT+IFz1nU8l4i2mA0cV7x3qJ2v5qYt6e8w9ZrX1b2c3d4e5f6g7h8i9j0k==
X-Received: by 2002:a05:6402:2109:b0:5d0:8a9d:1c2e with SMTP id 4fb4d7f45d1cf-5d81de2a8b1mr1;
        Sun, 05 Jan 2025 18:02:40 -0800 (PST)
MIME-Version: 1.0
References: <reply-77-1.1736125500@helpdesk.example.com>
In-Reply-To: <reply-77-1.1736125500@helpdesk.example.com>
From: {b_word("鈴木花子", "UTF-8")} <Hanako.Suzuki@gmail.com>
Date: Mon, 6 Jan 2025 11:02:29 +0900
Message-ID: <CAF3k9xQ+uXr7mN0pT2e_Yb6dWq1Zs8LkVhJ4cR5nA9oE7gU3iw@mail.gmail.com>
Subject: Re: Invoice INV-2025-0042
To: Example Support <support@helpdesk.example.com>
Cc: accounting@example.org
Content-Type: multipart/alternative; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

"""
    html_head = f"""
--{boundary}
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

"""
    return crlf(
        head.encode()
        + qp(GMAIL_TEXT.encode())
        + html_head.encode()
        + qp(GMAIL_HTML.encode())
        + f"\n--{boundary}--\n".encode()
    )


# --- apple_mail_reply.eml ---------------------------------------------------------------------

APPLE_TEXT = """\
お世話になっております。

画面のスクリーンショットを添付します。
ログイン後にこのエラーが表示されます。

鈴木

2025/01/06 10:15、サポート窓口 <support@helpdesk.example.com>のメール:
>\u0020
> 鈴木様
>\u0020
> エラー画面をお送りいただけますか。
>\u0020
"""

APPLE_HTML = """\
<html aria-label="メッセージ本文"><head><meta http-equiv="content-type" content="text/html; \
charset=utf-8"></head><body style="overflow-wrap: break-word; -webkit-nbsp-mode: space; \
line-break: after-white-space;">お世話になっております。<div><br></div><div>画面のスクリーンショット\
を添付します。</div><div>ログイン後にこのエラーが表示されます。</div><div><br></div><div>\
<img apple-inline="yes" id="1B7E4D2A-5C3F-4E8B-9A1D-2F6C8E0B4A7D" src="cid:\
3F1C2B7A-9D4E-4A6B-8C2D-1E5F7A9B0C3D@example.jp" alt="スクリーンショット.png"></div><div><br>\
</div><div>鈴木</div><div><br><blockquote type="cite"><div>2025/01/06 10:15、サポート窓口 \
&lt;support@helpdesk.example.com&gt;のメール:</div><br><div><div>鈴木様</div><div><br></div>\
<div>エラー画面をお送りいただけますか。</div></div></blockquote></div></body></html>
"""

APPLE_IMAGE_NAME = "スクリーンショット 2025-01-06 10.40.12.png"


def apple_mail_reply() -> bytes:
    related = "Apple-Mail=_8E2F1A3B-4C5D-4E6F-8A9B-0C1D2E3F4A5B"
    alternative = "Apple-Mail=_2B3C4D5E-6F7A-4B8C-9D0E-1F2A3B4C5D6E"
    encoded_name = "".join(f"%{b:02X}" for b in APPLE_IMAGE_NAME.encode())
    head = f"""\
Received: from smtpclient.apple (p1234567-ipoe.ipoe.ocn.ne.jp [153.246.10.20])
	by mx.helpdesk.example.com (Postfix) with ESMTPSA id 4YRb8Q1c2Lz9sTq
	for <support@helpdesk.example.com>; Mon,  6 Jan 2025 10:40:31 +0900 (JST)
From: {b_word("鈴木 一郎", "utf-8")} <ichiro.suzuki@example.jp>
Content-Type: multipart/related;
	type="multipart/alternative";
	boundary="{related}"
Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3826.300.87.4.3\\))
Subject: {b_word("Re: ログインできません", "utf-8")}
Date: Mon, 6 Jan 2025 10:40:18 +0900
In-Reply-To: <reply-88-1.1736127300@helpdesk.example.com>
To: support@helpdesk.example.com
References: <case-88.1736126900@helpdesk.example.com>
 <reply-88-1.1736127300@helpdesk.example.com>
Message-Id: <6A1E3C52-2B7D-4F0A-9E3B-5D8C1F2A7B90@example.jp>
X-Mailer: Apple Mail (2.3826.300.87.4.3)


--{related}
Content-Type: multipart/alternative;
	boundary="{alternative}"


--{alternative}
Content-Transfer-Encoding: quoted-printable
Content-Type: text/plain;
	charset=utf-8

"""
    html_head = f"""
--{alternative}
Content-Transfer-Encoding: quoted-printable
Content-Type: text/html;
	charset=utf-8

"""
    image_head = f"""
--{alternative}--

--{related}
Content-Transfer-Encoding: base64
Content-Disposition: inline;
	filename*=utf-8''{encoded_name}
Content-Type: image/png;
	x-unix-mode=0644;
	name="=?utf-8?B?{base64.b64encode(APPLE_IMAGE_NAME.encode()).decode()}?="
Content-Id: <3F1C2B7A-9D4E-4A6B-8C2D-1E5F7A9B0C3D@example.jp>

"""
    return crlf(
        head.encode()
        + qp(APPLE_TEXT.encode())
        + html_head.encode()
        + qp(APPLE_HTML.encode())
        + image_head.encode()
        + b64_lines(png_pixel())
        + f"\n--{related}--\n".encode()
    )


# --- iso2022jp.eml ----------------------------------------------------------------------------

ISO2022JP_SUBJECT = "お問い合わせ：請求書について"
ISO2022JP_TEXT = """\
サポートセンター御中

いつもお世話になっております。
株式会社さくら物産の佐藤でございます。

先月分の請求書（請求番号　2024-12-088）の金額が、
注文書の金額と異なっているようです。
お手数ですが、ご確認のほどよろしくお願い申し上げます。

佐藤　花子
"""


def iso2022jp() -> bytes:
    half = len(ISO2022JP_SUBJECT) // 2
    subject = (
        b_word(ISO2022JP_SUBJECT[:half], "ISO-2022-JP")
        + "\n "
        + b_word(ISO2022JP_SUBJECT[half:], "ISO-2022-JP")
    )
    head = f"""\
Return-Path: <hanako.sato@sakura-bussan.example.jp>
Received: from mail.sakura-bussan.example.jp (mail.sakura-bussan.example.jp [198.51.100.7])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRc1J6m0Xz9sTv
	for <support@helpdesk.example.com>; Tue,  7 Jan 2025 09:12:44 +0900 (JST)
Date: Tue, 07 Jan 2025 09:12:40 +0900
From: {b_word("佐藤 花子", "ISO-2022-JP")} <hanako.sato@sakura-bussan.example.jp>
To: support@helpdesk.example.com
Subject: {subject}
Message-Id: <20250107091240.8F3A.B1C2D3E4@sakura-bussan.example.jp>
MIME-Version: 1.0
Content-Type: text/plain; charset="ISO-2022-JP"
Content-Transfer-Encoding: 7bit
X-Mailer: Becky! ver. 2.81.05 [ja]

"""
    # Plain JIS X 0208 only: Python's own codec must produce exactly these bytes.
    return crlf(head.encode() + ISO2022JP_TEXT.encode("iso2022_jp"))


# --- shift_jis.eml ----------------------------------------------------------------------------

SJIS_SUBJECT = "㈱ミドリ電機より見積書送付のご案内"
SJIS_TEXT = """\
ご担当者様

㈱ミドリ電機 営業部の高橋です。
下記の通りお見積書をお送りいたします。

① 保守契約（年間）
② 現地作業費
③ 交換部品一式

ご不明な点がございましたらお知らせください。
"""
SJIS_FILENAME = "見積書①.pdf"


def shift_jis() -> bytes:
    boundary = "----=_NextPart_000_0012_01DB6012.3A4B5C60"
    head = f"""\
Received: from smtp.midori-denki.example.jp (smtp.midori-denki.example.jp [203.0.113.40])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRc5D2n7Kz9sTw
	for <support@helpdesk.example.com>; Tue,  7 Jan 2025 13:30:02 +0900 (JST)
From: {b_word("高橋 健", "Shift_JIS", "cp932")} <k.takahashi@midori-denki.example.jp>
To: <support@helpdesk.example.com>
Subject: {b_word(SJIS_SUBJECT, "Shift_JIS", "cp932")}
Date: Tue, 7 Jan 2025 13:29:55 +0900
Message-ID: <000c01db6012$3a4b5c60$aee21520$@midori-denki.example.jp>
MIME-Version: 1.0
Content-Type: multipart/mixed;
	boundary="{boundary}"
X-Mailer: Microsoft Outlook 14.0

This is a multi-part message in MIME format.

--{boundary}
Content-Type: text/plain;
	charset="Shift_JIS"
Content-Transfer-Encoding: 8bit

"""
    attachment_head = f"""
--{boundary}
Content-Type: application/pdf;
	name="{b_word(SJIS_FILENAME, "Shift_JIS", "cp932")}"
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
	filename="{b_word(SJIS_FILENAME, "Shift_JIS", "cp932")}"

"""
    return crlf(
        head.encode()
        + SJIS_TEXT.encode("cp932")
        + attachment_head.encode()
        + b64_lines(PDF)
        + f"\n--{boundary}--\n".encode()
    )


# --- euc_jp.eml -------------------------------------------------------------------------------

EUC_SUBJECT = "配送状況の確認をお願いします"
EUC_TEXT = """\
お世話になります。

注文番号 A-20250103-17 の商品がまだ届いておりません。
配送状況を確認していただけますでしょうか。

伊藤
"""


def euc_jp() -> bytes:
    head = f"""\
Received: from www3.shop-host.example.net (www3.shop-host.example.net [192.0.2.33])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRc7W0p9Mz9sTx
	for <support@helpdesk.example.com>; Tue,  7 Jan 2025 15:01:10 +0900 (JST)
To: support@helpdesk.example.com
Subject: {b_word(EUC_SUBJECT, "EUC-JP")}
From: {b_word("伊藤 誠", "EUC-JP")} <makoto.ito@example.ne.jp>
Date: Tue, 07 Jan 2025 15:01:08 +0900
Message-ID: <a1b2c3d4e5f60718293a4b5c6d7e8f90@www3.shop-host.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=EUC-JP
Content-Transfer-Encoding: 8bit
X-Mailer: PHP/7.4.33

"""
    return crlf(head.encode() + EUC_TEXT.encode("euc_jp"))


# --- forwarded.eml ----------------------------------------------------------------------------

FORWARDED_SUBJECT = "ご注文の発送のお知らせ #1234"


def forwarded() -> bytes:
    boundary = "------------0Ab1Cd2Ef3Gh4Ij5Kl6Mn7O"
    inner = f"""\
Return-Path: <noreply@shop.example.net>
Received: from mta.shop.example.net (mta.shop.example.net [192.0.2.80])
	by mail.example.org (Postfix) with ESMTP id 4YQz1a2b3c4d
	for <kenji.mori@example.org>; Sat,  4 Jan 2025 18:00:05 +0900 (JST)
From: Example Shop <noreply@shop.example.net>
To: kenji.mori@example.org
Subject: {b_word(FORWARDED_SUBJECT, "UTF-8")}
Date: Sat, 4 Jan 2025 18:00:00 +0900
Message-ID: <order-1234-shipped@shop.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

森 様

ご注文いただいた商品を発送いたしました。
お問い合わせ番号: 1234-5678-9012
"""
    head = f"""\
Received: from mail.example.org (mail.example.org [198.51.100.90])
	by mx.helpdesk.example.com (Postfix) with ESMTPS id 4YRd0C3r5Tz9sTy
	for <support@helpdesk.example.com>; Tue,  7 Jan 2025 16:20:31 +0900 (JST)
Message-ID: <5f0e7d8c-2a1b-4c3d-9e8f-7a6b5c4d3e2f@example.org>
Date: Tue, 7 Jan 2025 16:20:29 +0900
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: ja
To: support@helpdesk.example.com
From: Kenji Mori <kenji.mori@example.org>
Subject: {b_word("Fwd: " + FORWARDED_SUBJECT, "UTF-8")}
Content-Type: multipart/mixed; boundary="{boundary}"

This is a multi-part message in MIME format.
--{boundary}
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 8bit

The parcel did not contain what I ordered. I am forwarding the shipping\u0020
notice; could you check order 1234?

森

--{boundary}
Content-Type: message/rfc822; name="{FORWARDED_SUBJECT}.eml"
Content-Disposition: attachment; filename="{FORWARDED_SUBJECT}.eml"

"""
    return crlf(head.encode() + inner.encode() + f"\n--{boundary}--\n".encode())


# --- bounce_dsn.eml ---------------------------------------------------------------------------


def bounce_dsn() -> bytes:
    boundary = "4YRd3N0vXkz9sTz.1736235604/mx.helpdesk.example.com"
    return crlf(
        f"""\
Return-Path: <>
Received: by mx.helpdesk.example.com (Postfix)
	id 4YRd3N0vXkz9sTz; Tue,  7 Jan 2025 17:00:04 +0900 (JST)
Date: Tue,  7 Jan 2025 17:00:04 +0900 (JST)
From: MAILER-DAEMON@mx.helpdesk.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: support@helpdesk.example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <20250107080004.4YRd3N0vXkz9sTz@mx.helpdesk.example.com>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.helpdesk.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<someone@example.jp>: host mx01.example.jp[203.0.113.25] said: 550 5.1.1
    <someone@example.jp>: Recipient address rejected: User unknown in local
    recipient table (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.helpdesk.example.com
X-Postfix-Queue-ID: 4YRd3N0vXkz9sTz
X-Postfix-Sender: rfc822; support@helpdesk.example.com
Arrival-Date: Tue,  7 Jan 2025 17:00:02 +0900 (JST)

Final-Recipient: rfc822; someone@example.jp
Original-Recipient: rfc822;Someone@example.jp
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx01.example.jp
Diagnostic-Code: smtp; 550 5.1.1 <someone@example.jp>: Recipient address
    rejected: User unknown in local recipient table

--{boundary}
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <support@helpdesk.example.com>
Received: from app01.helpdesk.example.com (app01.helpdesk.example.com [10.0.0.21])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRd3M6tWqz9sTy
	for <someone@example.jp>; Tue,  7 Jan 2025 17:00:02 +0900 (JST)
From: Example Support <support@helpdesk.example.com>
To: someone@example.jp
Subject: [#1050] Re: Order status
Message-ID: <reply-1050-1.1736236800@helpdesk.example.com>
In-Reply-To: <customer-question-1050@example.jp>
Date: Tue, 07 Jan 2025 08:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Thank you for your question. Your order has shipped.

--{boundary}--
""".encode()
    )


def bounce_nonstandard() -> bytes:
    """A bounce from a mailer that labels the report multipart/mixed (some appliances do)."""
    boundary = "==bounce-7f3a=="
    return crlf(
        f"""\
Received: from gw.example.co.jp (gw.example.co.jp [203.0.113.99])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRd9X2aB1z9sU0
	for <support@helpdesk.example.com>; Tue,  7 Jan 2025 18:10:00 +0900 (JST)
From: Mail Administrator <Postmaster@gw.example.co.jp>
To: support@helpdesk.example.com
Subject: Returned mail: see transcript for details
Date: Tue, 7 Jan 2025 18:09:58 +0900
Message-ID: <200501071809.gw-bounce-1@gw.example.co.jp>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

The original message was received but could not be delivered:
mailbox is full.

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; gw.example.co.jp

Final-Recipient: RFC822; <Full.Box@example.co.jp>
Action: failed
Status: 4.2.2
Diagnostic-Code: X-Notes; Mailbox quota exceeded

--{boundary}
Content-Type: text/rfc822-headers

From: Example Support <support@helpdesk.example.com>
To: Full.Box@example.co.jp
Subject: Re: Warranty claim
Message-ID: <reply-1061-3.1736240000@helpdesk.example.com>

--{boundary}--
""".encode()
    )


# --- auto_reply.eml ---------------------------------------------------------------------------

AUTO_REPLY_TEXT = """\
誠に勝手ながら、1月6日から1月10日まで休暇をいただいております。
期間中にいただいたメールは、1月14日以降に順次対応いたします。

お急ぎの場合は、support-urgent@example.co.jp までご連絡ください。
"""


def auto_reply() -> bytes:
    return crlf(
        f"""\
Received: from TY3PR01MB11012.jpnprd01.prod.outlook.com (2603:1096:400:3d1::10)
 by mx.helpdesk.example.com (Postfix) with ESMTPS id 4YRdC1xY2Zz9sU1
 for <support@helpdesk.example.com>; Tue,  7 Jan 2025 18:30:01 +0900 (JST)
From: {b_word("木村 由美", "utf-8")} <yumi.kimura@example.co.jp>
To: {b_word("サポート窓口", "utf-8")} <support@helpdesk.example.com>
Subject: {b_word("自動応答: お問い合わせ：請求書について", "utf-8")}
Thread-Topic: {b_word("お問い合わせ：請求書について", "utf-8")}
Date: Tue, 7 Jan 2025 09:30:00 +0000
Message-ID: <6f2a3e1b9c0d4e5fa1b2c3d4e5f6a7b8@TY3PR01MB11012.jpnprd01.prod.outlook.com>
In-Reply-To: <reply-1044-1.1736242000@helpdesk.example.com>
References: <reply-1044-1.1736242000@helpdesk.example.com>
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
X-MS-Exchange-Inbox-Rules-Loop: yumi.kimura@example.co.jp
Content-Language: ja-JP
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64
MIME-Version: 1.0

""".encode()
        + b64_lines(AUTO_REPLY_TEXT.encode())
    )


# --- mailing_list.eml -------------------------------------------------------------------------


def mailing_list() -> bytes:
    return crlf(
        b"""\
Return-Path: <announce-bounces+support=helpdesk.example.com@lists.example.org>
Received: from lists.example.org (lists.example.org [192.0.2.150])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRdF8kL3mz9sU2
	for <support@helpdesk.example.com>; Wed,  8 Jan 2025 07:00:12 +0900 (JST)
From: Example Project <announce@lists.example.org>
To: announce@lists.example.org
Subject: [announce] Release 3.2.0 is available
Date: Tue, 07 Jan 2025 22:00:00 +0000
Message-ID: <release-3.2.0@lists.example.org>
Precedence: list
List-Id: Example Project announcements <announce.lists.example.org>
List-Unsubscribe: <https://lists.example.org/unsubscribe/announce>,
 <mailto:announce-leave@lists.example.org>
List-Post: NO (posting not allowed on this list)
Reply-To: Example Project Discussion <discuss@lists.example.org>
Sender: "announce" <announce-bounces@lists.example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

Release 3.2.0 is out. Highlights:

 * faster search
 * new export formats

--
announce mailing list
https://lists.example.org/announce
"""
    )


# --- broken messages --------------------------------------------------------------------------


def broken_mime() -> bytes:
    """A garbage header line, broken UTF-8 in an 8bit part, base64 and multipart cut short."""
    pdf_b64 = base64.b64encode(PDF).decode()
    return crlf(
        b"""\
Return-Path: <sender@legacy-mailer.example.net>
Received: from legacy-mailer.example.net (legacy-mailer.example.net [198.51.100.200])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRdK2pQ7rz9sU3
	for <support@helpdesk.example.com>; Wed,  8 Jan 2025 09:00:05 +0900 (JST)
From: Legacy Mailer <sender@legacy-mailer.example.net>
To: support@helpdesk.example.com
Subject: Invoice attached
this line is not a header at all
Date: Wed, 8 Jan 2025 09:00:00 +0900
Message-ID: <broken-0001@legacy-mailer.example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="==outer=="

This is a multi-part message in MIME format.

--==outer==
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello, the invoice is attached.
Broken bytes: \xe3\x81 and \xff\xfe here.
\xe3\x82\x88\xe3\x82\x8d\xe3\x81\x97\xe3\x81\x8f\xe3\x81\x8a\xe9\xa1\x98\xe3\x81\x84\xe3\x81\x97\xe3\x81\xbe\xe3\x81\x99\xe3\x80\x82

--==outer==
Content-Type: application/pdf; name="invoice.pdf"
Content-Disposition: attachment; filename="invoice.pdf"
Content-Transfer-Encoding: base64

"""
        + pdf_b64[:61].encode()
        + b"\n"
    )


def broken_boundary() -> bytes:
    """The declared boundary never appears: the parts cannot be separated."""
    return crlf(
        b"""\
Received: from web01.form.example.com (web01.form.example.com [203.0.113.150])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRdM5sT8uz9sU4
	for <support@helpdesk.example.com>; Wed,  8 Jan 2025 10:00:05 +0900 (JST)
From: Contact Form <form@form.example.com>
To: support@helpdesk.example.com
Subject: Contact form submission
Date: Wed, 8 Jan 2025 10:00:00 +0900
Message-ID: <form-20250108-0001@form.example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1_declared_boundary"

--b1_actual_boundary
Content-Type: text/plain; charset=UTF-8

Name: Kato
Message: The download link in my receipt does not work.

--b1_actual_boundary--
"""
    )


def not_a_message() -> bytes:
    """Text pasted into the mail drop with no headers at all."""
    return crlf(
        "Hello support,\nmy order 1234 never arrived. 注文番号 1234 です。\n\xa0\n".encode()
        + b"\xff trailing junk\n"
    )


# --- no_message_id.eml and html_only.eml ------------------------------------------------------


def no_message_id() -> bytes:
    return crlf(
        b"""\
Received: from printer01.office.example.com (printer01.office.example.com [10.20.0.15])
	by mx.helpdesk.example.com (Postfix) with SMTP id 4YRdP0uV1wz9sU5
	for <support@helpdesk.example.com>; Wed,  8 Jan 2025 11:00:02 +0900 (JST)
From: scanner@office.example.com
To: support@helpdesk.example.com
Subject: Scanned document
Date: Wed, 8 Jan 2025 11:00:00
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Scanned from MFP-3F. 2 pages.
"""
    )


def html_only() -> bytes:
    html = """\
<!DOCTYPE html><html><head><title>Notification</title><style>p{color:red}</style></head>
<body><h1>新しいお問い合わせ</h1><p>お名前: 中村&nbsp;様<br>電話番号: 03-1234-5678</p>
<p>内容:</p><blockquote>返品の手続きを<b>教えて</b>ください。</blockquote>
<p><a href="https://form.example.com/r/1" onclick="steal()">管理画面で見る</a></p>
<img src="https://tracker.example.com/open.gif"></body></html>
"""
    head = f"""\
Received: from web02.form.example.com (web02.form.example.com [203.0.113.151])
	by mx.helpdesk.example.com (Postfix) with ESMTP id 4YRdR3wX4yz9sU6
	for <support@helpdesk.example.com>; Wed,  8 Jan 2025 12:00:05 +0900 (JST)
From: {b_word("お問い合わせフォーム", "UTF-8")} <no-reply@form.example.com>
Reply-To: nakamura@example.jp
To: support@helpdesk.example.com
Subject: {b_word("【お問い合わせ】返品について", "UTF-8")}
Date: Wed, 08 Jan 2025 03:00:00 GMT
Message-ID: <form-20250108-0002@form.example.com>
MIME-Version: 1.0
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: base64

"""
    return crlf(head.encode() + b64_lines(html.encode()))


MESSAGES = {
    "outlook_reply.eml": outlook_reply,
    "gmail_reply.eml": gmail_reply,
    "apple_mail_reply.eml": apple_mail_reply,
    "iso2022jp.eml": iso2022jp,
    "shift_jis.eml": shift_jis,
    "euc_jp.eml": euc_jp,
    "forwarded.eml": forwarded,
    "bounce_dsn.eml": bounce_dsn,
    "bounce_nonstandard.eml": bounce_nonstandard,
    "auto_reply.eml": auto_reply,
    "mailing_list.eml": mailing_list,
    "broken_mime.eml": broken_mime,
    "broken_boundary.eml": broken_boundary,
    "not_a_message.eml": not_a_message,
    "no_message_id.eml": no_message_id,
    "html_only.eml": html_only,
}


def main() -> None:
    for name, build in MESSAGES.items():
        (HERE / name).write_bytes(build())
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
