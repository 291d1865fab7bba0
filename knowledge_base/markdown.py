"""Article bodies: Markdown to sanitized HTML for pages, and to plain text for search.

Raw HTML in the Markdown is shown as text, never passed through, and the rendered HTML is
sanitized again (nh3) so a parser bug cannot become a script on the public site.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "img", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr",
    "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}
_CODE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")

# Blocks whose end starts a new line of plain text.
_LINE_ENDS = {"paragraph_close", "heading_close", "tr_close", "blockquote_close"}


@dataclass(frozen=True)
class Rendered:
    html: str
    text: str


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # CommonMark plus GitHub's tables and strikethrough. No linkify: it needs linkify-it-py,
    # and editors write [text](url) anyway.
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render(md: str) -> Rendered:
    """Sanitized HTML (links get rel="nofollow noopener") and the body's plain text.

    The text has one line per paragraph, heading, list item, table row or code line, and
    no markup; it feeds search snippets and trigram matching.
    """
    tokens = _parser().parse(md or "")
    html = _parser().renderer.render(tokens, _parser().options, {})
    return Rendered(html=_sanitize(html), text=_plain_text(tokens))


def _sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_keep_attribute,
        filter_style_properties={"text-align"},
        url_schemes={"http", "https", "mailto", "tel"},
        link_rel="nofollow noopener",
    )


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    # Only the fence's language survives on <code>, for a syntax highlighter to pick up.
    if tag == "code" and attribute == "class":
        return value if _CODE_CLASS.fullmatch(value) else None
    return value


def _plain_text(tokens: list[Token]) -> str:
    lines: list[str] = []
    current: list[str] = []

    def end_line() -> None:
        line = "".join(current).strip()
        if line:
            lines.append(line)
        current.clear()

    for token in tokens:
        if token.type == "inline":
            current.append(_inline_text(token.children or []))
        elif token.type in ("fence", "code_block"):
            end_line()
            lines.extend(line.rstrip() for line in token.content.splitlines() if line.strip())
        elif token.type in ("th_close", "td_close"):
            current.append(" ")
        elif token.type in _LINE_ENDS or token.type == "list_item_close":
            end_line()
    end_line()
    return "\n".join(lines)


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "image":
            parts.append(_inline_text(child.children or []))
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
    return _join_soft_breaks("".join(parts))


def _join_soft_breaks(text: str) -> str:
    # A line break inside a Japanese paragraph is not a word gap: joining with a space
    # would split words for trigram search ("パスワー ド").
    pieces = text.split("\n")
    out = pieces[0]
    for piece in pieces[1:]:
        if out and piece and _is_wide(out[-1]) and _is_wide(piece[0]):
            out += piece
        else:
            out += " " + piece
    return out


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")
