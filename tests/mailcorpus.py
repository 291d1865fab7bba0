"""Raw email messages for tests: the committed corpus in tests/data/mail/, and big ones built
on demand (a 10 MB attachment does not belong in the repository).

    from tests.mailcorpus import load, large_attachment_message
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

MAIL_DIR = Path(__file__).resolve().parent / "data" / "mail"


def names() -> list[str]:
    """File names of every message in the corpus, sorted."""
    return sorted(p.name for p in MAIL_DIR.glob("*.eml"))


def load(name: str) -> bytes:
    """The raw bytes of one corpus message, exactly as delivered ("gmail_reply" or "….eml")."""
    if not name.endswith(".eml"):
        name += ".eml"
    return (MAIL_DIR / name).read_bytes()


def attachment_payload(size: int, seed: int = 1) -> bytes:
    """Deterministic incompressible bytes, so a test can compare what comes back."""
    return random.Random(seed).randbytes(size)


def large_attachment_message(
    size: int = 10 * 1024 * 1024,
    *,
    filename: str = "scan.pdf",
    message_id: str = "large-attachment-1@example.jp",
) -> bytes:
    """A multipart/mixed message whose one attachment is `attachment_payload(size)`.

    Built by hand rather than with email.message, which is slow for megabytes of base64.
    """
    boundary = "----=_Part_large_0123456789"
    head = (
        "Received: from mail.example.jp (mail.example.jp [198.51.100.12])\r\n"
        "\tby mx.helpdesk.example.com (Postfix) with ESMTPS id 4YRdT7yZ5az9sU7\r\n"
        "\tfor <support@helpdesk.example.com>; Wed,  8 Jan 2025 14:00:05 +0900 (JST)\r\n"
        "From: Ichiro Tanaka <ichiro.tanaka@example.jp>\r\n"
        "To: support@helpdesk.example.com\r\n"
        "Subject: Scanned contract\r\n"
        "Date: Wed, 8 Jan 2025 14:00:00 +0900\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        "The signed contract is attached.\r\n"
        f"--{boundary}\r\n"
        f'Content-Type: application/pdf; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode()
    body = base64.encodebytes(attachment_payload(size)).replace(b"\n", b"\r\n")
    return head + body + f"--{boundary}--\r\n".encode()
