"""Turn one raw email into plain values the email channel can store: no database, no network.

Customers' mail is messy: Japanese charsets with Windows extensions under standard labels,
broken MIME from old mailers, truncated uploads, bounces and auto-replies that must never be
answered. A message we cannot read perfectly is still a customer waiting, so nothing here
raises on bad input; what went wrong is listed in `ParsedMail.parse_errors` and as much as
possible is extracted anyway.

Header values are decoded from their raw form (not through the `email` package's header
objects), because those raise on some malformed headers and decode with the strict codec
named by the label, which turns Windows-only characters such as ① or ㈱ into garbage.
"""

from __future__ import annotations

import binascii
import codecs
import email.message
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from urllib.parse import unquote

from helpdesk.interactions import safe_filename, sanitize_html

MAX_MESSAGE_BYTES = 30 * 1024 * 1024  # whole raw message
MAX_PARTS = 200  # MIME parts walked

# An oversize message's headers are still read, from at most this much of its start.
_MAX_HEAD_BYTES = 1024 * 1024
_MAX_FILENAME_CHARS = 200
_DISPLAY_HEADERS = ("Date", "From", "To", "Cc", "Subject", "Message-ID", "User-Agent", "X-Mailer")


@dataclass(frozen=True)
class ParsedAttachment:
    """One file carried by a message; `inline` ones are shown inside the body, not listed."""

    filename: str  # safe, never empty
    content_type: str
    data: bytes
    content_id: str | None  # without <>
    inline: bool


@dataclass(frozen=True)
class Bounce:
    """What a delivery-status notification says about the message it returns."""

    recipients: tuple[str, ...]  # failed addresses, lowercased
    status: str | None  # e.g. "5.1.1"
    diagnostic: str | None
    permanent: bool  # 5.x.x
    # Message-ID of the returned message (from its attached copy or headers): bounces from
    # Postfix and most MTAs carry no In-Reply-To, so this is how one finds the original.
    original_message_id: str | None = None


@dataclass(frozen=True)
class ParsedMail:
    """Everything the email channel needs from one message, decoded to plain Python values."""

    message_id: str  # without <>; "sha256-<hex of raw>@helpdesk.invalid" when missing
    in_reply_to: tuple[str, ...]  # ids without <>, in order
    references: tuple[str, ...]
    subject: str  # decoded, whitespace collapsed
    from_name: str
    from_address: str  # lowercased addr-spec, "" if none
    to: tuple[str, ...]  # lowercased addr-specs
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: datetime | None  # aware; UTC when the header had no zone
    text: str  # text/plain body, or text derived from the HTML when there is none
    html: str | None  # sanitized; cid: links left for the ingest service to rewrite
    attachments: tuple[ParsedAttachment, ...]
    auto_submitted: bool  # auto-reply, list, bulk or bounce: never answer automatically
    bounce: Bounce | None
    parse_errors: tuple[str, ...]  # empty means clean
    headers: dict[str, str]  # decoded Date, From, To, Cc, Subject, ... for display


def parse_message(raw: bytes) -> ParsedMail:
    """Decode a raw RFC 5322 message as delivered (bytes, any line endings).

    Never raises for bad input: problems go into parse_errors and as much as possible is
    extracted. A message without a usable Message-ID gets one derived from a hash of its
    bytes, so a redelivery of the same bytes is recognized as a duplicate.
    """
    raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    try:
        return _parse(raw)
    except Exception as exc:  # a bug here must not lose a customer's mail
        return ParsedMail(
            message_id=_hashed_message_id(raw),
            in_reply_to=(),
            references=(),
            subject="",
            from_name="",
            from_address="",
            to=(),
            cc=(),
            reply_to=(),
            date=None,
            text=_clean_text(raw[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")),
            html=None,
            attachments=(),
            auto_submitted=False,
            bounce=None,
            parse_errors=(f"message could not be parsed: {type(exc).__name__}: {exc}",),
            headers={},
        )


def _hashed_message_id(raw: bytes) -> str:
    return f"sha256-{hashlib.sha256(raw).hexdigest()}@helpdesk.invalid"


def _parse(raw: bytes) -> ParsedMail:
    errors: list[str] = []
    oversize = len(raw) > MAX_MESSAGE_BYTES
    if oversize:
        errors.append(
            f"message exceeds {MAX_MESSAGE_BYTES} bytes ({len(raw)} bytes); body not read"
        )
        source = _head_of(raw)
    else:
        source = _drop_garbage_header_lines(raw, errors)
    if not raw.strip():
        errors.append("message is empty")
    msg = _parse_bytes(source, errors, headers_only=oversize)

    heads = _Headers(msg, errors)
    from_pairs = heads.addresses("From")
    from_name, from_address = from_pairs[0] if from_pairs else ("", "")

    body = _Body()
    walker = _Walker(errors)
    if not oversize and msg is not None:
        try:
            body = walker.visit(msg)
        except Exception as exc:  # a bug or a pathological structure must not lose the mail
            errors.append(f"message structure could not be read: {type(exc).__name__}: {exc}")
    text, html = _body_text_and_html(body, errors)
    if not oversize and not text.strip() and html is None and not walker.attachments and errors:
        # Nothing usable came out of a broken message: show the agent the raw body instead.
        text = _clean_text(_decode(_body_of(raw), None, "raw message", []))

    attachments = _finish_attachments(walker.attachments, html)
    bounce = None
    if walker.dsn_parts and (walker.saw_dsn_report or _is_mailer_daemon(from_address)):
        bounce = _bounce_from(walker.dsn_parts, errors, walker.enclosed_ids)

    return ParsedMail(
        message_id=heads.message_id(raw),
        in_reply_to=heads.ids("In-Reply-To"),
        references=heads.ids("References"),
        subject=_collapse(heads.text("Subject")),
        from_name=_collapse(from_name),
        from_address=from_address,
        to=tuple(addr for _, addr in heads.addresses("To")),
        cc=tuple(addr for _, addr in heads.addresses("Cc")),
        reply_to=tuple(addr for _, addr in heads.addresses("Reply-To")),
        date=heads.date(),
        text=text,
        html=html,
        attachments=attachments,
        auto_submitted=heads.is_auto_submitted() or bounce is not None,
        bounce=bounce,
        parse_errors=tuple(dict.fromkeys(_clean_text(e) for e in errors)),
        headers=heads.display(),
    )


# --- reading the bytes ------------------------------------------------------------------------

_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


def _parse_bytes(
    source: bytes, errors: list[str], *, headers_only: bool
) -> email.message.Message | None:
    """Parse with the modern policy; fall back to compat32, whose header handling cannot raise."""
    for pol in (policy.default, policy.compat32):
        try:
            return BytesParser(policy=pol).parsebytes(source, headersonly=headers_only)
        except Exception as exc:
            errors.append(f"parser failed ({type(exc).__name__}: {exc})")
    return None


def _header_end(raw: bytes, limit: int) -> int | None:
    """Offset of the blank line that ends the header block, if it is within `limit` bytes."""
    found = [i for i in (raw.find(b"\r\n\r\n", 0, limit), raw.find(b"\n\n", 0, limit)) if i >= 0]
    return min(found) if found else None


def _head_of(raw: bytes) -> bytes:
    end = _header_end(raw, _MAX_HEAD_BYTES)
    return raw[: end if end is not None else _MAX_HEAD_BYTES]


def _body_of(raw: bytes) -> bytes:
    end = _header_end(raw, len(raw))
    if end is None:
        return raw
    return raw[end:].lstrip(b"\r\n")


def _drop_garbage_header_lines(raw: bytes, errors: list[str]) -> bytes:
    """Remove stray non-header lines from the middle of the header block.

    The parser ends the headers at the first line that is not a header, so one garbage line
    would turn Content-Type and everything after it into body text. Garbage after the last
    real header is left alone: that is a body whose blank separator line is missing.
    """
    end = _header_end(raw, _MAX_HEAD_BYTES)
    if end is None:
        return raw
    lines = raw[:end].split(b"\n")

    def is_field(line: bytes) -> bool:
        return bool(_HEADER_LINE.match(line))

    def is_header(index: int, line: bytes) -> bool:
        return is_field(line) or line[:1] in (b" ", b"\t") or (index == 0 and line[:5] == b"From ")

    if not lines or not is_header(0, lines[0]):
        return raw
    last_field = max(i for i, line in enumerate(lines) if is_field(line) or i == 0)
    kept = [
        line for i, line in enumerate(lines) if i > last_field or is_header(i, line.rstrip(b"\r"))
    ]
    dropped = len(lines) - len(kept)
    if not dropped:
        return raw
    errors.append(f"dropped {dropped} malformed header line(s)")
    return b"\n".join(kept) + raw[end:]


# --- charsets ---------------------------------------------------------------------------------

# Labels that real Japanese mail carries, mapped to the decoders to try in order. Windows
# writes cp932 under "Shift_JIS" and CP50220 under "ISO-2022-JP"; the strict codecs for the
# labels reject the extension characters (①, ㈱, half-width katakana) that customers use.
_ISO2022JP = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004", "cp5022x")
_SJIS = ("cp932", "shift_jis_2004")
_EUCJP = ("euc_jp", "euc_jis_2004", "eucjp-ms")
_JAPANESE = {*_ISO2022JP, *_SJIS, *_EUCJP}
_FAMILY_LABELS = {
    _ISO2022JP: (
        "iso-2022-jp", "csiso2022jp", "iso-2022-jp-ms", "iso-2022-jp-1", "iso-2022-jp-2",
        "iso-2022-jp-3", "iso-2022-jp-2004", "iso-2022-jp-ext", "cp50220", "cp50221", "cp50222",
    ),
    _SJIS: (
        "shift-jis", "shift-jis-2004", "shiftjis", "sjis", "s-jis", "x-sjis", "ms-kanji",
        "mskanji", "csshiftjis", "windows-31j", "cswindows31j", "cp932", "ms932", "x-ms-cp932",
        "cp943c",
    ),
    _EUCJP: (
        "euc-jp", "x-euc-jp", "eucjp", "eucjp-ms", "eucjp-win", "cseucpkdfmtjapanese", "cp51932",
        "euc-jis-2004", "euc-jisx0213",
    ),
    ("gb18030",): ("gb2312", "gbk", "x-gbk", "euc-cn", "cp936", "gb18030"),
    ("cp950", "big5hkscs"): ("big5", "x-big5", "cp950", "big5-hkscs"),
    ("cp949",): ("ks-c-5601-1987", "ks-c-5601", "euc-kr", "cp949"),
    # Windows text labelled Latin-1 is common; cp1252 differs only in unused control codes.
    ("cp1252", "latin-1"): ("iso-8859-1", "latin1", "latin-1", "l1", "us-latin1"),
    ("iso8859_8",): ("iso-8859-8-i",),
}  # fmt: skip
_FAMILIES = {label: family for family, labels in _FAMILY_LABELS.items() for label in labels}
# "No charset" and labels that mean nothing: guess from the bytes.
_UNDECLARED = {"", "us-ascii", "ascii", "unknown-8bit", "x-unknown", "unknown", "default", "7bit"}
_GUESSES = ("ascii", "utf-8", "euc_jp", "cp932")


def _family(label: str | None) -> tuple[tuple[str, ...] | None, str | None]:
    """(decoders to try, or None to guess; a problem with the label, if any)."""
    name = (label or "").strip().strip("\"'").lower().replace("_", "-")
    if name in _UNDECLARED:
        return None, None
    if name in _FAMILIES:
        return _FAMILIES[name], None
    try:
        return (codecs.lookup(name).name,), None
    except (LookupError, ValueError):
        return None, f"unknown charset {label!r}"


def _decode(data: bytes, label: str | None, where: str, errors: list[str]) -> str:
    """Decode bytes labelled with a MIME charset, trying the decoders real mail needs.

    A label that is wrong but whose bytes are clearly another charset (8-bit data labelled
    ISO-2022-JP, or unlabelled Japanese) is decoded silently; only bytes no decoder accepts
    are replaced, and then `where` is reported in `errors`.
    """
    if not data:
        return ""
    family, problem = _family(label)
    if problem:
        errors.append(f"{where}: {problem}")
    if family is None:
        escaped = b"\x1b$" in data or b"\x1b(" in data
        attempts = [*_ISO2022JP, *_GUESSES] if escaped else list(_GUESSES)
    elif family[0] in _JAPANESE:
        attempts = [*family, "utf-8", "cp932", "euc_jp"]
    else:
        attempts = list(family)
    for codec in attempts:
        text = _try_decode(data, codec)
        if text is not None:
            return text
    primary = family[0] if family else "utf-8"
    primary = {"cp5022x": "iso2022_jp_ext", "eucjp-ms": "euc_jp"}.get(primary, primary)
    try:
        replaced = data.decode(primary, "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        primary, replaced = "utf-8", data.decode("utf-8", "replace")
    if primary == "utf-8" and _mostly_invalid(data, replaced):
        # Not damaged UTF-8 but another charset under the wrong label (Japanese web forms
        # send Shift_JIS as "utf-8"). Only now try the guesses: damaged UTF-8 text often
        # happens to be valid cp932 too.
        for codec in ("euc_jp", "cp932"):
            text = _try_decode(data, codec)
            if text is not None:
                errors.append(f"{where}: labelled {label or 'undeclared'} but is {codec}")
                return text
    errors.append(f"{where}: bytes not valid in charset {label or 'undeclared'}; replaced")
    return replaced


def _mostly_invalid(data: bytes, replaced: str) -> bool:
    """True when most non-ASCII bytes failed to decode (a wrong label, not a damaged text)."""
    high = sum(1 for byte in data if byte >= 0x80)
    return replaced.count("\ufffd") * 2 > high


def _try_decode(data: bytes, codec: str) -> str | None:
    if codec == "cp5022x":
        return _decode_cp5022x(data)
    if codec == "eucjp-ms":
        return _decode_eucjp_ms(data)
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError, ValueError, TypeError):
        # LookupError also covers labels naming non-text codecs ("base64", "rot13").
        return None


def _jis_to_sjis(c1: int, c2: int) -> bytes:
    """One JIS X 0208 code point (as its two 7-bit bytes) in Shift_JIS encoding."""
    s1 = ((c1 + 1) >> 1) + (0x70 if c1 <= 0x5E else 0xB0)
    s2 = c2 + (0x7E if not c1 & 1 else 0x1F if c2 <= 0x5F else 0x20)
    return bytes((s1, s2))


def _decode_cp5022x(data: bytes) -> str | None:
    """ISO-2022-JP as Windows writes it (CP50220/50221), via Shift_JIS and cp932.

    Outlook and many Japanese web forms put NEC and IBM extension characters (①, ㈱, ～)
    and half-width katakana into ISO-2022-JP; no Python codec reads those.
    """
    out = bytearray()
    mode, i, n = "ascii", 0, len(data)
    while i < n:
        byte = data[i]
        if byte == 0x1B:
            seq = data[i + 1 : i + 3]
            modes = {b"(B": "ascii", b"(J": "ascii", b"$@": "jis", b"$B": "jis", b"(I": "kana"}
            if seq not in modes:
                return None
            mode, i = modes[seq], i + 3
            continue
        if byte >= 0x80:
            return None
        if byte in (0x0A, 0x0D) or mode == "ascii":
            out.append(byte)
            i += 1
        elif mode == "kana":
            if not 0x21 <= byte <= 0x5F:
                return None
            out.append(byte + 0x80)
            i += 1
        else:
            if i + 1 >= n or not (0x21 <= byte <= 0x7E and 0x21 <= data[i + 1] <= 0x7E):
                return None
            out += _jis_to_sjis(byte, data[i + 1])
            i += 2
    try:
        return out.decode("cp932")
    except UnicodeDecodeError:
        return None


def _decode_eucjp_ms(data: bytes) -> str | None:
    """EUC-JP with the Windows extension rows (eucJP-ms, CP51932), via Shift_JIS and cp932."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte < 0x80:
            out.append(byte)
            i += 1
        elif byte == 0x8E and i + 1 < n and 0xA1 <= data[i + 1] <= 0xDF:
            out.append(data[i + 1])
            i += 2
        elif 0xA1 <= byte <= 0xFE and i + 1 < n and 0xA1 <= data[i + 1] <= 0xFE:
            out += _jis_to_sjis(byte - 0x80, data[i + 1] - 0x80)
            i += 2
        else:
            return None
    try:
        return out.decode("cp932")
    except UnicodeDecodeError:
        return None


def _b64decode(data: bytes) -> tuple[bytes, str | None]:
    """Decode base64 leniently: (bytes, problem or None).

    Truncated uploads and careless encoders are common; decode what is there rather than
    return nothing (the `email` package hands back the undecoded text in those cases).
    """
    compact = re.sub(rb"\s+", b"", data)
    valid = re.fullmatch(
        rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", compact
    )
    problem = None
    if not valid:
        if re.search(rb"[^A-Za-z0-9+/=]", compact):
            problem = "characters outside the base64 alphabet"
        elif b"=" in compact.rstrip(b"="):
            problem = "base64 padding inside the data"
        else:
            problem = "truncated base64 data"
    out = bytearray()
    # Some encoders concatenate separately padded chunks: decode each chunk on its own.
    for chunk in re.split(rb"=+", re.sub(rb"[^A-Za-z0-9+/=]", b"", compact)):
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
        out += binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4))
    return bytes(out), problem


# --- headers ----------------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n$")
_ADDR_SPEC = re.compile(r"^[^\s\x00-\x1f@<>(),;:\"\[\]]+@[^\s\x00-\x1f@<>(),;:\"\[\]]+$")
_ADDR_IN_TEXT = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_MSG_ID = re.compile(r"<\s*([^<>\s]+?)\s*>")
_BARE_ID = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")


def _unfold(value: str) -> str:
    return _FOLD.sub("", value)


def _collapse(value: str) -> str:
    """Collapse ASCII whitespace; keep U+3000, the ideographic space Japanese text relies on."""
    return re.sub(r"[ \t\r\n\f\v]+", " ", value).strip()


_SURROGATE = re.compile("[\udc80-\udcff]")  # how the parser keeps raw 8-bit bytes in a str


def _raw_bytes(text: str) -> bytes:
    """A raw header or payload string back to the bytes the parser read."""
    return text.encode("utf-8", "surrogateescape")


def _decode_words(value: str, where: str, errors: list[str]) -> str:
    """Decode a raw (possibly folded) header value: RFC 2047 words and raw 8-bit bytes.

    Adjacent encoded words in one charset are joined before decoding, since mailers split
    multi-byte characters (and ISO-2022-JP escape runs) across words.
    """
    value = _unfold(value)
    pieces: list[list] = []  # [bytes, charset or None for unencoded text]
    position, after_word = 0, False
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        if between and not (after_word and not between.strip(" \t")):
            pieces.append([_raw_bytes(between), None])
        charset = match.group(1).split("*")[0].lower()
        encoded = match.group(3).encode("ascii", "surrogateescape")
        if match.group(2) in "bB":
            data, problem = _b64decode(encoded)
            if problem and problem != "truncated base64 data":
                errors.append(f"{where}: encoded word with {problem}")
        else:
            data = binascii.a2b_qp(encoded, header=True)
        if pieces and pieces[-1][1] == charset:
            pieces[-1][0] += data
        else:
            pieces.append([data, charset])
        position, after_word = match.end(), True
    if value[position:]:
        pieces.append([_raw_bytes(value[position:]), None])
    return _clean_text("".join(_decode(data, charset, where, errors) for data, charset in pieces))


class _Headers:
    """Header values of one message, read from the raw header strings."""

    def __init__(self, msg: email.message.Message | None, errors: list[str]) -> None:
        self._items = list(msg.raw_items()) if msg is not None else []
        self._errors = errors

    def raw(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self._items:
            if key.lower() == name:
                text = (value if isinstance(value, str) else str(value)).replace("\x00", "")
                return _utf8_header(text)
        return None

    def text(self, name: str) -> str:
        value = self.raw(name)
        return _decode_words(value, f"{name} header", self._errors) if value else ""

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """[(decoded display name, lowercased addr-spec)]; unparseable entries are skipped."""
        value = self.raw(name)
        if not value:
            return []
        value = _unfold(value)
        try:
            pairs = getaddresses([value])
        except Exception:
            pairs = []
        result = []
        for display, addr in pairs:
            addr = _clean_text(addr.strip().strip("<>").lower())
            if _ADDR_SPEC.match(addr):
                result.append((_decode_words(display, f"{name} header", self._errors), addr))
        if not result:
            # getaddresses gives up on some malformed lists; pick out anything address-like.
            decoded = _decode_words(value, f"{name} header", self._errors)
            result = [("", addr.lower()) for addr in _ADDR_IN_TEXT.findall(decoded)]
            if value.strip() and name == "From":
                self._errors.append(
                    f"From header {'has no address' if not result else 'is malformed'}"
                )
        unique: dict[str, tuple[str, str]] = {}
        for display, addr in result:
            unique.setdefault(addr, (display, addr))
        return list(unique.values())

    def ids(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if not value:
            return ()
        value = _unfold(value)
        found = _MSG_ID.findall(value) or [t for t in value.split() if _BARE_ID.match(t)]
        return tuple(dict.fromkeys(_clean_text(i) for i in found))

    def message_id(self, raw: bytes) -> str:
        value = self.raw("Message-ID")
        ids = self.ids("Message-ID")
        if ids:
            return ids[0]
        if value is not None and value.strip():
            self._errors.append("Message-ID header is malformed; using a hash of the message")
        return _hashed_message_id(raw)

    def date(self) -> datetime | None:
        """Aware datetime; a date without a zone (or "-0000") is taken as UTC."""
        value = self.raw("Date")
        if not value or not value.strip():
            return None
        value = _collapse(_unfold(value))
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            self._errors.append(f"Date header is not a valid date: {value[:100]!r}")
            return None
        if parsed.tzinfo is None:
            # email.utils knows only US zone names; Japanese mailers sometimes write "JST".
            zone = timezone(timedelta(hours=9)) if re.search(r"\b[JK]ST\b", value) else UTC
            parsed = parsed.replace(tzinfo=zone)
        return parsed

    def is_auto_submitted(self) -> bool:
        """Mail that must not get an automatic answer: auto-replies, lists, bulk."""
        auto = (self.raw("Auto-Submitted") or "").split(";")[0].strip().lower()
        precedence = (self.raw("Precedence") or "").strip().lower()
        return bool(
            (auto and auto != "no")
            or precedence in ("bulk", "junk", "list", "auto_reply")
            or any(
                self.raw(name) is not None
                for name in ("X-Auto-Response-Suppress", "List-Id", "X-Autoreply", "X-Autorespond")
            )
        )

    def display(self) -> dict[str, str]:
        shown = {}
        for name in _DISPLAY_HEADERS:
            if self.raw(name) is not None:
                shown[name] = _clean_text(_collapse(self.text(name)))
        return shown


# --- body -------------------------------------------------------------------------------------


@dataclass
class _Body:
    """Text and HTML found in one subtree of the MIME structure, in order."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)

    def extend(self, other: _Body) -> None:
        self.texts += other.texts
        self.htmls += other.htmls

    def has_text(self) -> bool:
        return any(t.strip() for t in self.texts)


@dataclass
class _Found:
    """An attachment before we know whether the HTML body refers to it."""

    filename: str | None
    content_type: str
    data: bytes
    content_id: str | None
    disposition: str | None
    fallback_extension: str


class _PartInfo:
    """Content-* headers of one part, read through a compat32 copy that never raises."""

    def __init__(self, part: email.message.Message, where: str, errors: list[str]) -> None:
        shadow = email.message.Message()
        shadow.set_default_type(part.get_default_type())
        self.content_id: str | None = None
        self.cte = ""
        for name, value in part.raw_items():
            key = name.lower()
            value = _unfold(value if isinstance(value, str) else str(value))
            if key in ("content-type", "content-disposition") and key not in shadow:
                if _SURROGATE.search(value):
                    # Raw 8-bit bytes (an unencoded Japanese file name, say): compat32 would
                    # mangle them, so decode them first.
                    value = _decode(_raw_bytes(value), None, f"{where} {name}", errors)
                shadow[name] = value
            elif key == "content-id" and self.content_id is None:
                self.content_id = _clean_text(value.strip().strip("<>").strip()) or None
            elif key == "content-transfer-encoding" and not self.cte:
                self.cte = value.strip().lower()
        self.content_type = shadow.get_content_type()
        self.disposition = shadow.get_content_disposition()

        def param(name: str, header: str = "content-type") -> str | None:
            return self._param(shadow, name, header, where, errors)

        self.charset = param("charset")
        self.report_type = (param("report-type") or "").lower()
        self.flowed = (param("format") or "").lower() == "flowed"
        self.delsp = (param("delsp") or "").lower() == "yes"
        self.filename = param("filename", "content-disposition") or param("name")

    @staticmethod
    def _param(
        shadow: email.message.Message, name: str, header: str, where: str, errors: list[str]
    ) -> str | None:
        try:
            value = shadow.get_param(name, header=header)
        except Exception:
            return None
        if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text)
            charset, _, text = value
            try:
                data = text.encode("latin-1")
            except UnicodeEncodeError:
                return text
            return _decode(data, charset or None, f"{where} {name}", errors)
        if not isinstance(value, str):
            return None
        return _decode_words(value, f"{where} {name}", errors).strip() or None


class _Walker:
    """Walks the MIME tree once, collecting body text, attachments and delivery reports."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.count = 0
        self.attachments: list[_Found] = []
        self.dsn_parts: list[email.message.Message] = []
        self.saw_dsn_report = False
        self.enclosed_ids: list[str] = []  # Message-IDs of attached messages, in order

    def visit(self, part: email.message.Message, path: str = "") -> _Body:
        """Body found in `part` and below; attachments and reports are collected on the side.

        `path` numbers parts as IMAP does ("1.2"), so errors can say where they are.
        """
        self.count += 1
        if self.count > MAX_PARTS:
            if self.count == MAX_PARTS + 1:
                self.errors.append(f"more than {MAX_PARTS} MIME parts; the rest were skipped")
            return _Body()
        where = f"part {path}" if path else "message"
        info = _PartInfo(part, where, self.errors)
        ctype = info.content_type
        where = f"{where} ({ctype})"
        self._note_defects(part, where)

        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            self.dsn_parts.append(part)
            return _Body()
        if ctype in ("message/rfc822", "message/global"):
            self._attach_message(part, info, where)
            return _Body()
        if part.is_multipart():
            if ctype == "multipart/report" and info.report_type == "delivery-status":
                self.saw_dsn_report = True
            children = [c for c in part.get_payload() if isinstance(c, email.message.Message)]
            found = [
                self.visit(child, f"{path}.{i}" if path else str(i))
                for i, child in enumerate(children, 1)
            ]
            return (
                _choose_alternative(found) if ctype == "multipart/alternative" else _merged(found)
            )

        data = self._payload_bytes(part, info, where)
        if ctype.startswith("multipart/"):
            # The boundary is missing or never appears: the parser kept the parts as one blob.
            self.errors.append(f"{where}: parts could not be separated; raw content shown as text")
            return _Body(texts=[_decode(data, info.charset, where, self.errors)])
        is_body = info.disposition != "attachment" and not info.filename
        if is_body and ctype == "text/plain":
            text = _decode(data, info.charset, where, self.errors)
            return _Body(texts=[_unflow(text, info.delsp) if info.flowed else text])
        if is_body and ctype == "text/html":
            return _Body(htmls=[_decode(data, info.charset, where, self.errors)])
        if ctype == "text/rfc822-headers":  # what a bounce returns of the original
            returned = _parse_bytes(data, [], headers_only=True)
            self.enclosed_ids += _Headers(returned, []).ids("Message-ID")[:1]
        extension = mimetypes.guess_extension(ctype) or (
            ".txt" if ctype.startswith("text/") else ""
        )
        self.attachments.append(
            _Found(
                info.filename, ctype, data, info.content_id, info.disposition, extension or ".bin"
            )
        )
        return _Body()

    def _note_defects(self, part: email.message.Message, where: str) -> None:
        for defect in getattr(part, "defects", ()):
            doc = (type(defect).__doc__ or type(defect).__name__).strip().splitlines()[0]
            self.errors.append(f"{where}: {doc.rstrip('.')}")

    def _payload_bytes(self, part: email.message.Message, info: _PartInfo, where: str) -> bytes:
        data, problem = _leaf_bytes(part, info.cte)
        if problem:
            self.errors.append(f"{where}: {problem}")
        return data

    def _attach_message(self, part: email.message.Message, info: _PartInfo, where: str) -> None:
        """A forwarded or returned message, kept whole as a .eml file named by its subject."""
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        data, subject = b"", ""
        if isinstance(inner, email.message.Message):
            for pol in (policy.default, policy.compat32):
                try:
                    data = inner.as_bytes(policy=pol.clone(linesep="\r\n"))
                    break
                except Exception:
                    continue
            inner_headers = _Headers(inner, [])
            subject = inner_headers.text("Subject")
            self.enclosed_ids += inner_headers.ids("Message-ID")[:1]
        else:
            data = self._payload_bytes(part, info, where)
        # A subject is not a path: keep its slashes from being read as directories.
        name = re.sub(r"[/\\]", "_", _collapse(subject))
        name = name or (info.filename or "").removesuffix(".eml") or "message"
        self.attachments.append(
            _Found(f"{name}.eml", "message/rfc822", data, info.content_id, "attachment", ".eml")
        )


def _leaf_bytes(part: email.message.Message, cte: str) -> tuple[bytes, str | None]:
    """The decoded content of a leaf part, and what was wrong with its encoding.

    Base64 is decoded here because the `email` package returns bad base64 undecoded.
    Everything else goes through get_payload(decode=True), the one accessor that hands back
    raw 8-bit bytes: plain get_payload() has already decoded them with the declared charset.
    """
    if cte == "base64":
        payload = part.get_payload()
        return _b64decode(_raw_bytes(payload)) if isinstance(payload, str) else (b"", None)
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        return b"", f"content could not be decoded ({type(exc).__name__})"
    return (data if isinstance(data, bytes) else b""), None


def _choose_alternative(found: list[_Body]) -> _Body:
    """The last (richest) plain-text and HTML renderings of one multipart/alternative."""
    with_text = [b for b in found if b.has_text()]
    with_html = [b for b in found if b.htmls]
    return _Body(
        texts=with_text[-1].texts if with_text else [],
        htmls=with_html[-1].htmls if with_html else [],
    )


def _merged(found: list[_Body]) -> _Body:
    body = _Body()
    for item in found:
        body.extend(item)
    return body


_HEAD = re.compile(r"<head\b.*?</head\s*>|<title\b.*?</title\s*>", re.I | re.S)


def _body_text_and_html(body: _Body, errors: list[str]) -> tuple[str, str | None]:
    text = "\n".join(_clean_text(t).strip("\n") for t in body.texts if t.strip())
    raw_html = _clean_text("\n".join(body.htmls)) if body.htmls else None
    html = None
    if raw_html is not None:
        try:
            # The sanitizer drops <head> and <title> tags but keeps their text.
            html = sanitize_html(_HEAD.sub("", raw_html)).strip()
        except Exception as exc:
            errors.append(f"HTML body could not be sanitized ({type(exc).__name__}); dropped")
        if not text.strip():
            text = html_to_text(raw_html)
    return text.rstrip(), html


def _finish_attachments(found: list[_Found], html: str | None) -> tuple[ParsedAttachment, ...]:
    referenced = {
        unquote(m).strip("<>").lower()
        for m in re.findall(r"""cid:([^"'\s>)]+)""", html or "", flags=re.I)
    }
    result = []
    for number, item in enumerate(found, 1):
        cid_used = item.content_id is not None and item.content_id.lower() in referenced
        result.append(
            ParsedAttachment(
                filename=_safe_name(item.filename, number, item.fallback_extension),
                content_type=item.content_type,
                data=item.data,
                content_id=item.content_id,
                inline=cid_used
                or (item.disposition == "inline" and item.content_type.startswith("image/")),
            )
        )
    return tuple(result)


def _safe_name(name: str | None, number: int, extension: str) -> str:
    """A file name safe to store and show; long names keep their extension."""
    cleaned = safe_filename(_clean_text(name or "").replace("\ufffd", "_")) if name else ""
    if not cleaned or cleaned == "attachment":
        return f"attachment-{number}{extension}"
    if len(cleaned) > _MAX_FILENAME_CHARS:
        _, dot, ext = cleaned.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        cleaned = cleaned[: _MAX_FILENAME_CHARS - len(keep) - 1].rstrip(" .") + (
            f".{keep}" if keep else ""
        )
    return cleaned


def _utf8_header(value: str) -> str:
    """A header as an SMTPUTF8 MTA delivers it (RFC 6532: raw UTF-8, `From: <ken@例え.jp>`)
    reaches us as surrogate escapes of its bytes: read them as the UTF-8 they are. Raw bytes
    of another charset (Shift_JIS from an old client) stay escaped for `_decode_words` to
    guess; what is left of them anywhere else is cleaned like any text (`_clean_text`)."""
    if not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        return value


def _clean_text(text: str) -> str:
    """Drop NULs and lone surrogates: PostgreSQL text columns reject both."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return text.encode("utf-8", "replace").decode("utf-8").lstrip("\ufeff")


def _unflow(text: str, delsp: bool) -> str:
    """Join the soft-wrapped lines of a format=flowed (RFC 3676) body."""
    out: list[str] = []
    current: list = []  # [quote depth, text] of the paragraph being joined

    def flush() -> None:
        if current:
            depth, content = current
            out.append((">" * depth + " " if depth else "") + content)
            current.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if current and current[0] == depth:
            current[1] += content
        else:
            flush()
            current[:] = [depth, content]
        if not flowed:
            flush()
    flush()
    return "\n".join(out)


class _HtmlText(HTMLParser):
    """Plain text of an HTML body: block elements become line breaks, blockquotes '>' lines."""

    _BLOCKS = frozenset({
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "footer",
        "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre",
        "section", "table", "tr", "ul",
    })  # fmt: skip
    _SKIPPED = frozenset({"head", "script", "style", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[list] = [[0, ""]]
        self.depth = 0
        self.skipping = 0
        self.pre = 0

    def _break(self, force: bool = False) -> None:
        if force or self.lines[-1][1].strip():
            self.lines.append([self.depth, ""])
        else:
            self.lines[-1] = [self.depth, ""]

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIPPED:
            self.skipping += 1
        elif tag == "br":
            self._break(force=True)
        elif tag in self._BLOCKS:
            self._break()
            if tag == "blockquote":
                self.depth += 1
                self.lines[-1][0] = self.depth
            elif tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCKS:
            if tag == "blockquote":
                self.depth = max(0, self.depth - 1)
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)
            was_paragraph = tag == "p" and self.lines[-1][1].strip()
            self._break()
            if was_paragraph:
                self._break(force=True)

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        data = data.replace("\xa0", " ")
        if self.pre:
            first, *rest = data.split("\n")
            self.lines[-1][1] += first
            for line in rest:
                self.lines.append([self.depth, line])
            return
        data = re.sub(r"[ \t\r\n\f]+", " ", data)
        if not self.lines[-1][1]:
            data = data.lstrip(" ")
        self.lines[-1][1] += data

    def text(self) -> str:
        rendered = []
        for depth, line in self.lines:
            line = line.rstrip()
            rendered.append(("> " * depth + line).rstrip() if depth else line)
        return re.sub(r"\n{3,}", "\n\n", "\n".join(rendered)).strip("\n")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body, for mail that has no text/plain alternative."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; keep whatever it produced before giving up
        pass
    return _clean_text(parser.text())


# --- delivery-status notifications ------------------------------------------------------------

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def _is_mailer_daemon(address: str) -> bool:
    local = address.split("@")[0]
    return local in ("mailer-daemon", "postmaster", "mail-daemon") or local.startswith(
        "mailer-daemon"
    )


def _dsn_blocks(part: email.message.Message, errors: list[str]) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status part, keys lowercased."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the parser already split the blocks into messages
        blocks = []
        for block in payload:
            if isinstance(block, email.message.Message):
                fields: dict[str, str] = {}
                for key, value in block.raw_items():
                    fields.setdefault(key.lower(), _collapse(_unfold(str(value))))
                blocks.append(fields)
        return blocks
    info = _PartInfo(part, "delivery status", errors)
    data = _leaf_bytes(part, info.cte)[0]
    text = _clean_text(_decode(data, info.charset, "delivery status", errors))
    blocks = []
    for chunk in re.split(r"\n[ \t]*\n", text):
        fields = {}
        for line in re.sub(r"\n[ \t]+", " ", chunk).split("\n"):
            key, sep, value = line.partition(":")
            if sep and key.strip():
                fields.setdefault(key.strip().lower(), _collapse(value))
        if fields:
            blocks.append(fields)
    return blocks


def _bounce_from(
    parts: list[email.message.Message], errors: list[str], enclosed_ids: list[str]
) -> Bounce:
    """Summarize the per-recipient blocks of the delivery-status parts."""
    recipients = [
        b
        for part in parts
        for b in _dsn_blocks(part, errors)
        if {"final-recipient", "original-recipient", "action", "status"} & b.keys()
    ]

    def status_of(block: dict[str, str]) -> str | None:
        found = _STATUS.search(block.get("status", ""))
        return ".".join(found.groups()) if found else None

    def is_failed(block: dict[str, str]) -> bool:
        action = block.get("action", "").strip().lower()
        return action.startswith("failed") or (
            not action and (status_of(block) or "").startswith("5")
        )

    failed = [b for b in recipients if is_failed(b)]
    chosen = failed or recipients
    addresses: list[str] = []
    for block in failed:
        for key in ("final-recipient", "original-recipient"):
            addr = block.get(key, "").rpartition(";")[2].strip().strip("<>").lower()
            if _ADDR_SPEC.match(addr) and addr not in addresses:
                addresses.append(addr)
    status = next((s for s in map(status_of, chosen) if s), None)
    diagnostic = next((b["diagnostic-code"] for b in chosen if b.get("diagnostic-code")), None)
    if diagnostic and re.match(r"^[\w-]+\s*;", diagnostic):
        diagnostic = diagnostic.split(";", 1)[1].strip()
    return Bounce(
        recipients=tuple(addresses),
        status=status,
        diagnostic=_clean_text(diagnostic) if diagnostic else None,
        permanent=bool(failed) and (status.startswith("5") if status else True),
        original_message_id=enclosed_ids[0] if enclosed_ids else None,
    )


# --- quoted history ---------------------------------------------------------------------------

_QUOTED = re.compile(r"^[ \t]*[>＞]")
_ATTRIBUTION_END = re.compile(
    r"(\bwrote\s*[:：]|書きました\s*[:：]|のメール\s*[:：]|<[^<>\s]+@[^<>\s]+>\s*[:：])\s*$", re.I
)
_ATTRIBUTION_START = re.compile(r"^\s*(On\b|\d{2,4}\s*[/年.-]|\d{1,2}\s*/|At\b|Le\b|Am\b)", re.I)
_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(Original Message|元のメッセージ|オリジナル\s*メッセージ)\s*-{2,}\s*$", re.I
)
_UNDERSCORES = re.compile(r"^\s*_{8,}\s*$")
_FORWARD_MARK = re.compile(
    r"^\s*(-{2,}\s*(Forwarded message|転送メッセージ|Forwarded Message)|Begin forwarded message)",
    re.I,
)
_FROM_FIELD = re.compile(r"^\s*\*?\s*(From|差出人|送信者)\s*\*?\s*[:：]", re.I)
_SENT_FIELD = re.compile(r"^\s*\*?\s*(Sent|Date|送信日時|送信日|日付)\s*\*?\s*[:：]", re.I)


def split_quoted(text: str) -> tuple[str, str]:
    """Split a plain-text body into (new text, folded part): quoted history and signature.

    Recognizes a quoted ('>') tail, attribution lines ("On ... wrote:", Gmail and Apple Mail
    in English and Japanese, "...さんは書きました:"), Outlook "-----Original Message-----" and
    "From:/Sent:" ("差出人:/送信日時:") header blocks, and the "-- " signature delimiter.
    Interleaved replies and bottom-posted answers are never folded. Returns (text, "") when
    there is nothing to fold, or when folding would leave no new text at all.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    signature = _signature_line(lines)
    cuts = [
        cut
        for cut in (
            _outlook_block(lines),
            _attribution(lines),
            signature,
            _quoted_tail(lines[:signature] if signature is not None else lines),
        )
        if cut is not None
    ]
    if not cuts:
        return text, ""
    cut = min(cuts)
    new = "\n".join(lines[:cut]).rstrip()
    if not new.strip():
        return text, ""
    return new, "\n".join(lines[cut:]).strip("\n")


def _next_nonblank(lines: list[str], start: int) -> int | None:
    return next((i for i in range(start, len(lines)) if lines[i].strip()), None)


def _outlook_block(lines: list[str]) -> int | None:
    """Outlook's history: an "Original Message" rule or a From:/Sent: header block.

    A header block right below a "Forwarded message" mark is content, not history.
    """
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            return i
        if _FROM_FIELD.match(line) and any(_SENT_FIELD.match(x) for x in lines[i + 1 : i + 5]):
            before = [j for j in range(max(0, i - 3), i) if lines[j].strip()]
            if before and _FORWARD_MARK.match(lines[before[-1]]):
                continue
            if before and _UNDERSCORES.match(lines[before[-1]]):
                return before[-1]
            return i
    return None


def _attribution(lines: list[str]) -> int | None:
    """First attribution line (possibly wrapped over three lines) above a quoted tail."""
    for i, line in enumerate(lines):
        if not line.strip() or _QUOTED.match(line):
            continue
        for span in (1, 2, 3):
            chunk = lines[i : i + span]
            if len(chunk) < span or any(not x.strip() or _QUOTED.match(x) for x in chunk):
                break
            if span > 1 and not _ATTRIBUTION_START.match(line):
                break
            if _ATTRIBUTION_END.search(" ".join(x.strip() for x in chunk)):
                first_quote = _next_nonblank(lines, i + span)
                if (
                    first_quote is not None
                    and _QUOTED.match(lines[first_quote])
                    and _only_quotes_follow(lines, first_quote)
                ):
                    return i
                break
    return None


def _only_quotes_follow(lines: list[str], start: int) -> bool:
    """True when nothing but quoted lines, blanks and a signature come after `start`."""
    for line in lines[start:]:
        if line.rstrip() == "--":
            return True
        if line.strip() and not _QUOTED.match(line):
            return False
    return True


def _signature_line(lines: list[str]) -> int | None:
    """The "-- " delimiter; a bare "--" counts only near the end of the text."""
    for i, line in enumerate(lines):
        if line == "-- " or (line.rstrip() == "--" and len(lines) - i <= 15):
            return i
    return None


def _quoted_tail(lines: list[str]) -> int | None:
    """Start of the run of quoted (and blank) lines that ends the text, if it ends quoted."""
    last = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip()), None)
    if last is None or not _QUOTED.match(lines[last]):
        return None
    start = last
    for i in range(last, -1, -1):
        if _QUOTED.match(lines[i]):
            start = i
        elif lines[i].strip():
            break
    return start
