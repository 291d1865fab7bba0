"""Live chat: conversations, their numbered messages, routing to agents, transcripts.

The protocol and the routing rules are in docs/CHAT.md. Three choices shape this module:

- **One counter per conversation.** A message takes `last_seq + 1` by updating the
  conversation row, which locks it until commit; so messages of one conversation commit,
  and their events reach sockets, in sequence order. `(conversation, client_id)` is unique,
  so a resent message is stored once and answered with its first number.
- **One router at a time.** Offers, lapsed offers, abandoned chats and queue positions are
  worked by `route`, under a transaction-level advisory lock: every process may call it, one
  does the work, and two processes never offer the same chat twice.
- **The transcript is an interaction.** The first visitor message opens a `chat` case and a
  `chat` interaction on it (so the chat is on the customer's one timeline from the start);
  closing the chat writes the whole conversation into that interaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import cases, events, presence, sla, visibility
from helpdesk.config import Settings
from helpdesk.customers import CustomerInput, IdentityInput, add_identity, create_customer
from helpdesk.errors import Conflict, DeskError, Forbidden, InvalidInput, NotFound
from helpdesk.identities import customers_for_identity, normalize_email
from helpdesk.interactions import (
    MAX_TEXT_CHARS,
    add_interaction,
    clean_content_type,
    safe_filename,
    write_file,
)
from helpdesk.models import (
    CannedResponse,
    Case,
    ChatConversation,
    ChatFile,
    ChatMessage,
    Interaction,
    Team,
    User,
)
from helpdesk.opening_hours import OpeningHours

MAX_CHARS = 2000
MAX_MESSAGES = 5000
MESSAGES_PER_10S = 10
MAX_TRANSCRIPTS = 3
# A visitor may come back to a closed chat (reload, second tab) to rate it or ask for the
# transcript; after this the token is forgotten.
RESUME_AFTER_CLOSE = timedelta(hours=1)
ROUTER_LOCK = 0x6368_6174  # "chat"
WAITING = ("queued", "offered")
OPEN = ("new", "queued", "offered", "active")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

SYSTEM_TEXT = {
    "joined": {"en": "{name} joined the chat.", "ja": "{name}が対応を開始しました。"},
    "transferred": {"en": "The chat was passed to {name}.", "ja": "{name}に引き継ぎました。"},
    "requeued": {
        "en": "The chat was passed to the {name} team; please wait a moment.",
        "ja": "{name}チームに引き継ぎます。少々お待ちください。",
    },
    "closed": {"en": "The chat has ended.", "ja": "チャットを終了しました。"},
    "left": {"en": "The visitor left.", "ja": "お客様が退出しました。"},
}
SUBJECT = {"en": "Chat: {text}", "ja": "チャット: {text}"}
OFFLINE_SUBJECT = {"en": "Message from the website chat", "ja": "チャットからのメッセージ"}
TRANSCRIPT_TEXT = {
    "en": "Here is the transcript of your chat with us.\n\n{transcript}\n",
    "ja": "チャットの記録をお送りします。\n\n{transcript}\n",
}


class ChatOffline(DeskError):
    """Nobody can take the chat now; the visitor may leave a message instead."""

    status = 503
    code = "offline"

    def __init__(self, reason: str) -> None:
        super().__init__("no agent is available" if reason == "no_agents" else "outside chat hours")
        self.reason = reason


@dataclass(frozen=True)
class VisitorInput:
    name: str
    email: str | None = None
    language: str | None = None
    visitor_id: str | None = None
    page_url: str | None = None
    team: str | None = None


@dataclass(frozen=True)
class Posted:
    seq: int
    duplicate: bool
    conversation_id: int
    queued: bool = False  # this message opened the case and queued the chat


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def lang_of(conv: ChatConversation) -> str:
    return "ja" if (conv.language or "ja").lower().startswith("ja") else "en"


def _clean_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} is required", field=field)
    name = " ".join(value.split())
    if len(name) > 100:
        raise InvalidInput(f"{field} is longer than 100 characters", field=field)
    return name


def check_body(body: object, *, allow_empty: bool = False) -> str:
    if not isinstance(body, str):
        raise InvalidInput("body must be text", field="body")
    body = body.strip()
    if not body and not allow_empty:
        raise InvalidInput("the message is empty", field="body")
    if len(body) > MAX_CHARS:
        raise InvalidInput(
            f"the message is {len(body)} characters; the limit is {MAX_CHARS}",
            field="body",
            code="too_long",
        )
    return body


def check_client_id(value: object) -> str:
    if not isinstance(value, str) or not _CLIENT_ID.match(value):
        raise InvalidInput(
            "client_id must be 1-64 letters, digits or ._:- characters", field="client_id"
        )
    return value


# -- starting, resuming ---------------------------------------------------------------------


async def _team_id(session: AsyncSession, team: str | None) -> int | None:
    if not team:
        return None
    found = await session.scalar(select(Team.id).where(Team.name == team))
    if found is None and team.isdigit():
        found = await session.scalar(select(Team.id).where(Team.id == int(team)))
    if found is None:
        raise InvalidInput(f"no team {team!r}", field="team")
    return found


async def agents_taking_chats(session: AsyncSession, team_id: int | None) -> int:
    """Agents who chose `available` and have a socket open (busy with calls or at capacity
    or not: a visitor may queue for them)."""
    return int(
        await session.scalar(
            text(
                """
                SELECT count(*) FROM users u JOIN agent_presence p ON p.user_id = u.id
                WHERE u.is_active AND p.status = 'available'
                  AND EXISTS (SELECT 1 FROM agent_sockets s WHERE s.user_id = u.id)
                  AND (CAST(:team AS integer) IS NULL OR u.team_id = :team)
                """
            ),
            {"team": team_id},
        )
        or 0
    )


async def _customer_for_visitor(
    session: AsyncSession, name: str, email: str | None, visitor_id: str | None, region: str
) -> int:
    """The existing customer with this email, else the one of this browser, else a new one."""
    found = []
    if email:
        found = await customers_for_identity(session, "email", email, region)
    if not found and visitor_id:
        found = await customers_for_identity(session, "chat", visitor_id, region)
    if found:
        customer = found[0]
        if visitor_id and not await customers_for_identity(session, "chat", visitor_id, region):
            await add_identity(
                session, customer.id, IdentityInput("chat", visitor_id), region=region
            )
        if email and not await customers_for_identity(session, "email", email, region):
            # Found by this browser, with an address new to the desk: keep it, so that the
            # customer's mail finds them too.
            await add_identity(session, customer.id, IdentityInput("email", email), region=region)
        return customer.id
    identities = []
    if email:
        identities.append(IdentityInput("email", email, is_primary=True))
    if visitor_id:
        identities.append(IdentityInput("chat", visitor_id))
    customer = await create_customer(
        session, CustomerInput(name=name, identities=identities), region=region
    )
    return customer.id


async def start(
    session: AsyncSession,
    visitor: VisitorInput,
    *,
    region: str,
    hours: OpeningHours | None = None,
    now: datetime | None = None,
) -> tuple[ChatConversation, str]:
    """Open a conversation for a visitor; raises `ChatOffline` when nobody can take it."""
    name = _clean_name(visitor.name)
    email = normalize_email(visitor.email) if visitor.email else None
    visitor_id = visitor.visitor_id or None
    if visitor_id is not None and not _CLIENT_ID.match(visitor_id):
        raise InvalidInput("visitor id must be 1-64 letters, digits or ._:-", field="id")
    language = (visitor.language or "ja").lower()[:8]
    if not re.fullmatch(r"[a-z]{2}(-[a-z0-9]{1,5})?", language):
        raise InvalidInput("language must be a language tag such as ja or en", field="language")
    team_id = await _team_id(session, visitor.team)
    if hours is not None and not hours.is_open(now or datetime.now(UTC)):
        raise ChatOffline("closed_hours")
    if await agents_taking_chats(session, team_id) == 0:
        raise ChatOffline("no_agents")
    customer_id = await _customer_for_visitor(session, name, email, visitor_id, region)
    token = secrets.token_urlsafe(24)
    conv = ChatConversation(
        token_hash=hash_token(token),
        customer_id=customer_id,
        team_id=team_id,
        visitor_name=name,
        visitor_email=email,
        visitor_id=visitor_id,
        language=language,
        page_url=(visitor.page_url or "")[:2000] or None,
    )
    session.add(conv)
    await session.flush()
    return conv, token


async def for_token(session: AsyncSession, token: object) -> ChatConversation:
    if not isinstance(token, str) or not 8 <= len(token) <= 100:
        raise NotFound("unknown chat token")
    conv = await session.scalar(
        select(ChatConversation).where(ChatConversation.token_hash == hash_token(token))
    )
    if conv is None:
        raise NotFound("unknown chat token")
    if conv.closed_at is not None and conv.closed_at < datetime.now(UTC) - RESUME_AFTER_CLOSE:
        raise NotFound("this chat ended more than an hour ago")
    return conv


async def get(
    session: AsyncSession, conversation_id: int, *, lock: bool = False
) -> ChatConversation:
    conv = await session.get(
        ChatConversation, conversation_id, with_for_update=lock, populate_existing=lock
    )
    if conv is None:
        raise NotFound(f"chat {conversation_id} not found")
    return conv


# -- messages -------------------------------------------------------------------------------

_APPEND = text(
    """
    WITH c AS (
        UPDATE chat_conversations
        SET last_seq = last_seq + 1, last_message_at = now()
        WHERE id = :cid AND state = ANY(CAST(:states AS text[]))
          AND last_seq < :max_messages
          AND (CAST(:author AS integer) IS NULL OR agent_id = :author)
          AND NOT EXISTS (
              SELECT 1 FROM chat_messages WHERE conversation_id = :cid AND client_id = :client
          )
        RETURNING last_seq, agent_id, case_id, visitor_name, team_id
    )
    INSERT INTO chat_messages (conversation_id, seq, client_id, sender, author_user_id, name,
                               body, file_id)
    SELECT :cid, c.last_seq, :client, :sender, :author,
           coalesce(CAST(:name AS text), c.visitor_name), :body, :file
    FROM c
    RETURNING seq, created_at, name, (SELECT agent_id FROM c), (SELECT case_id FROM c),
              (SELECT team_id FROM c)
    """
)


def message_frame(
    conv_id: int,
    *,
    seq: int,
    sender: str,
    name: str,
    body: str,
    client_id: str | None,
    at: datetime,
    case_id: int | None,
    file: ChatFile | None = None,
) -> dict[str, Any]:
    return {
        "conversation": conv_id,
        "seq": seq,
        "from": sender,
        "name": name,
        "body": body,
        "client_id": client_id,
        "attachment": file_json(file) if file is not None else None,
        "at": at.isoformat(),
        "case_id": case_id,
    }


def file_json(file: ChatFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "filename": file.filename,
        "content_type": file.content_type,
        "size": file.size,
        "url": f"/chat/files/{file.id}",
    }


async def post(
    session: AsyncSession,
    conversation_id: int,
    *,
    sender: str,
    body: str,
    client_id: str | None,
    author: User | None = None,
    file_id: int | None = None,
) -> Posted:
    """Append a visitor's or agent's message; a repeated `client_id` returns the first seq.

    An agent may write only into a chat they hold; a visitor's first message opens the case
    and queues the chat (see `_open_case`).
    """
    file = None
    if file_id is not None:
        file = await session.get(ChatFile, file_id)
        if file is None or file.conversation_id != conversation_id:
            raise InvalidInput(f"no upload {file_id} in this chat", field="attachment")
    if sender == "visitor":
        name_row = None
        states = ["queued", "offered", "active"]
    else:
        assert author is not None
        name_row = author.name
        states = ["active"]
    params = {
        "cid": conversation_id,
        "states": states,
        "max_messages": MAX_MESSAGES,
        "author": author.id if author is not None else None,
        "client": client_id,
        "sender": sender,
        "name": name_row,
        "body": body,
        "file": file_id,
    }
    # One statement in the usual case. A concurrent resend of the same client_id makes it
    # fail on the unique key; the caller retries the transaction, which then finds the
    # first one (see helpdesk.web.chat.post_message).
    row = (await session.execute(_APPEND, params)).first()
    queued = False
    if row is None and client_id is not None:
        seq = await session.scalar(
            select(ChatMessage.seq).where(
                ChatMessage.conversation_id == conversation_id, ChatMessage.client_id == client_id
            )
        )
        if seq is not None:
            return Posted(seq, True, conversation_id)
    if row is None and sender == "visitor":
        conv = await get(session, conversation_id, lock=True)
        if conv.state == "new":
            await _open_case(session, conv, body or (file.filename if file else ""))
            row = (await session.execute(_APPEND, params)).first()
            queued = True
    if row is not None:
        seq, created_at, name, agent_id, case_id, team_id = row
        if case_id is not None:  # SLA: an agent's message answers, a visitor's asks
            if sender == "agent":
                await sla.on_agent_public_reply(session, case_id, created_at)
            elif sender == "visitor":
                await sla.on_customer_message(session, case_id, created_at)
        frame = message_frame(
            conversation_id,
            seq=seq,
            sender=sender,
            name=name or "",
            body=body,
            client_id=client_id,
            at=created_at,
            case_id=case_id,
            file=file,
        )
        await events.publish(
            session,
            events.Event(
                "chat_message",
                frame,
                users=(agent_id,) if agent_id else (),
                topics=(f"chat:{conversation_id}",),
                team=team_id,
            ),
        )
        return Posted(seq, False, conversation_id, queued)
    conv = await get(session, conversation_id)
    if conv.state in ("closed", "abandoned"):
        raise Conflict("this chat has ended", code="closed")
    if conv.last_seq >= MAX_MESSAGES:
        raise Conflict(f"a chat holds at most {MAX_MESSAGES} messages", code="closed")
    if sender == "agent":
        if conv.agent_id != (author.id if author else None):
            raise Forbidden("this chat is not yours")
        raise Conflict(f"the chat is {conv.state}; accept it first")
    raise Conflict(f"the chat is {conv.state}")


async def _system(session: AsyncSession, conv: ChatConversation, what: str, name: str = "") -> int:
    """A system line in the conversation (joined, transferred, ended), numbered like any."""
    body = SYSTEM_TEXT[what][lang_of(conv)].format(name=name)
    seq = await session.scalar(
        update(ChatConversation)
        .where(ChatConversation.id == conv.id)
        .values(last_seq=ChatConversation.last_seq + 1, last_message_at=func.now())
        .returning(ChatConversation.last_seq)
    )
    assert seq is not None
    conv.last_seq = seq
    at = datetime.now(UTC)
    session.add(
        ChatMessage(conversation_id=conv.id, seq=seq, sender="system", body=body, created_at=at)
    )
    await session.flush()
    frame = message_frame(
        conv.id,
        seq=seq,
        sender="system",
        name="",
        body=body,
        client_id=None,
        at=at,
        case_id=conv.case_id,
    )
    await events.publish(
        session,
        events.Event(
            "chat_message",
            frame,
            users=(conv.agent_id,) if conv.agent_id else (),
            topics=(f"chat:{conv.id}",),
            team=conv.team_id,
        ),
    )
    return seq


async def _open_case(session: AsyncSession, conv: ChatConversation, first: str) -> None:
    lang = lang_of(conv)
    line = " ".join(first.split())
    subject = SUBJECT[lang].format(text=(line[:80] + "…") if len(line) > 80 else line or "-")
    case = await cases.create_case(
        session,
        cases.CaseInput(
            customer_id=conv.customer_id, subject=subject, channel="chat", team_id=conv.team_id
        ),
        author_user_id=None,
    )
    entry = await add_interaction(
        session,
        customer_id=conv.customer_id,
        case_id=case.id,
        kind="chat",
        direction="in",
        text=first,
        meta={"conversation_id": conv.id, "visitor": conv.visitor_name, "state": "queued"},
    )
    conv.case_id = case.id
    conv.interaction_id = entry.id
    conv.state = "queued"
    conv.queued_at = datetime.now(UTC)
    await session.flush()
    await _announce_state(session, conv, by=None)


async def messages(
    session: AsyncSession, conversation_id: int, *, after: int = 0, limit: int = MAX_MESSAGES
) -> list[dict[str, Any]]:
    rows = (
        await session.execute(
            select(ChatMessage, ChatFile)
            .outerjoin(ChatFile, ChatFile.id == ChatMessage.file_id)
            .where(ChatMessage.conversation_id == conversation_id, ChatMessage.seq > after)
            .order_by(ChatMessage.seq)
            .limit(limit)
        )
    ).all()
    case_id = await session.scalar(
        select(ChatConversation.case_id).where(ChatConversation.id == conversation_id)
    )
    return [
        message_frame(
            conversation_id,
            seq=m.seq,
            sender=m.sender,
            name=m.name,
            body=m.body,
            client_id=m.client_id,
            at=m.created_at,
            case_id=case_id,
            file=f,
        )
        for m, f in rows
    ]


async def visitor_ack(session: AsyncSession, conversation_id: int, seq: object) -> tuple[int, int]:
    """Record how far the visitor has received; late or out-of-order acks keep the highest.

    Returns (acked, last_seq). An ack beyond the last message sent is the caller's to refuse
    (`seq > last_seq`): what was sent is recorded all the same, because the socket writes
    the highest of several acks at once and the lower ones were good.
    """
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInput("seq must be a whole number", field="seq")
    row = (
        await session.execute(
            update(ChatConversation)
            .where(ChatConversation.id == conversation_id)
            .values(
                visitor_ack_seq=func.greatest(
                    ChatConversation.visitor_ack_seq, func.least(seq, ChatConversation.last_seq)
                )
            )
            .returning(ChatConversation.visitor_ack_seq, ChatConversation.last_seq)
        )
    ).first()
    if row is None:
        raise NotFound(f"chat {conversation_id} not found")
    return int(row.visitor_ack_seq), int(row.last_seq)


async def mark_read(session: AsyncSession, conversation_id: int, user: User, seq: object) -> int:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInput("seq must be a whole number", field="seq")
    conv = await get(session, conversation_id)
    _check_may_see(conv, user)
    conv.agent_read_seq = max(conv.agent_read_seq, min(seq, conv.last_seq))
    await session.flush()
    return conv.agent_read_seq


async def typing(session: AsyncSession, conv: ChatConversation, *, sender: str, on: bool) -> None:
    """Not stored: only announced (to the agent, or to the visitor's tabs)."""
    data = {"conversation": conv.id, "from": sender, "on": bool(on)}
    if sender == "visitor":
        if conv.agent_id is None:
            return
        event = events.Event("chat_typing", data, users=(conv.agent_id,))
    else:
        event = events.Event("chat_typing", data, topics=(f"chat:{conv.id}",), team=conv.team_id)
    await events.publish(session, event)


# -- agents: accept, transfer, close --------------------------------------------------------


def _check_may_see(conv: ChatConversation, user: User) -> None:
    if conv.agent_id == user.id or conv.offered_to == user.id:
        return
    scope = visibility.scope_for(user)
    if scope is not None and not scope.sees(conv.team_id, conv.agent_id):
        raise Forbidden("this chat belongs to another team")
    if user.role in ("supervisor", "admin") or conv.state in WAITING:
        return
    raise Forbidden("this chat is another agent's")


async def _recount(session: AsyncSession, user_id: int | None) -> None:
    """Keep the agent's presence (`active_chats`, hence busy at capacity) in step."""
    if user_id is None:
        return
    count = await session.scalar(
        select(func.count())
        .select_from(ChatConversation)
        .where(ChatConversation.agent_id == user_id, ChatConversation.state == "active")
    )
    await presence.set_active_chats(session, user_id, int(count or 0))


async def accept(session: AsyncSession, conversation_id: int, user: User) -> ChatConversation:
    conv = await get(session, conversation_id, lock=True)
    if conv.state == "active" and conv.agent_id == user.id:
        return conv  # a double click
    if conv.state != "offered" or conv.offered_to != user.id:
        raise Conflict("this chat is no longer offered to you")
    if conv.offer_expires_at is not None and conv.offer_expires_at <= datetime.now(UTC):
        raise Conflict("the offer has lapsed; the chat went to the next agent")
    conv.state = "active"
    conv.agent_id = user.id
    conv.offered_to = None
    conv.offer_expires_at = None
    conv.passed_over = []
    conv.accepted_at = datetime.now(UTC)
    conv.agent_read_seq = conv.last_seq
    await session.flush()
    await _assign_case(session, conv, user.id)
    await _system(session, conv, "joined", user.name)
    await _recount(session, user.id)
    await _announce_state(session, conv, by="agent")
    return conv


async def _assign_case(session: AsyncSession, conv: ChatConversation, user_id: int | None) -> None:
    if conv.case_id is None:
        return
    case = await session.get(Case, conv.case_id, with_for_update=True)
    if case is None or case.assignee_id == user_id:
        return
    previous = case.assignee_id
    case.assignee_id = user_id
    if user_id is not None and case.status == "new":
        case.status = "open"
    await session.flush()
    await cases.announce(
        session, case, "assigned", actor_user_id=user_id, previous_assignee_id=previous
    )


async def transfer(
    session: AsyncSession,
    conversation_id: int,
    actor: User,
    *,
    agent_id: object = None,
    team_id: object = None,
) -> ChatConversation:
    """Hand the chat to another agent (at once) or back to a team's queue."""
    if (agent_id is None) == (team_id is None):
        raise InvalidInput("give either agent_id or team_id", field="agent_id")
    conv = await get(session, conversation_id, lock=True)
    if conv.state not in OPEN or conv.state == "new":
        raise Conflict(f"a {conv.state} chat cannot be transferred")
    if actor.role == "agent" and conv.agent_id != actor.id:
        raise Forbidden("only the agent holding the chat, or a supervisor, may transfer it")
    previous = conv.agent_id
    offered = conv.offered_to
    if agent_id is not None:
        if not isinstance(agent_id, int) or isinstance(agent_id, bool):
            raise InvalidInput("agent_id must be a number", field="agent_id")
        target = await session.get(User, agent_id)
        if target is None or not target.is_active:
            raise InvalidInput(f"no active agent {agent_id}", field="agent_id")
        if target.id == previous and conv.state == "active":
            return conv
        conv.state = "active"
        conv.agent_id = target.id
        conv.offered_to = None
        conv.offer_expires_at = None
        conv.accepted_at = conv.accepted_at or datetime.now(UTC)
        conv.agent_read_seq = 0
        await session.flush()
        await _assign_case(session, conv, target.id)
        await _system(session, conv, "transferred", target.name)
    else:
        if not isinstance(team_id, int) or isinstance(team_id, bool):
            raise InvalidInput("team_id must be a number", field="team_id")
        team = await session.get(Team, team_id)
        if team is None:
            raise InvalidInput(f"no team {team_id}", field="team_id")
        conv.state = "queued"
        conv.team_id = team.id
        conv.agent_id = None
        conv.offered_to = None
        conv.offer_expires_at = None
        conv.passed_over = [previous] if previous else []
        conv.queued_at = datetime.now(UTC)
        # Back to waiting: abandonment counts from now, not from when the chat began.
        conv.visitor_seen_at = datetime.now(UTC)
        conv.last_position = None
        await session.flush()
        if conv.case_id is not None:
            case = await session.get(Case, conv.case_id, with_for_update=True)
            if case is not None:
                was = case.assignee_id
                case.team_id = team.id
                case.assignee_id = None
                await session.flush()
                await cases.announce(
                    session, case, "assigned", actor_user_id=actor.id, previous_assignee_id=was
                )
        await _system(session, conv, "requeued", team.name)
    for uid in {previous, conv.agent_id} - {None}:
        await _recount(session, uid)
    if offered is not None:
        await _withdraw(session, conv.id, offered, "transferred")
    await _announce_state(session, conv, by="agent", also=(previous,))
    return conv


async def close(
    session: AsyncSession, conversation_id: int, *, by: str, actor: User | None = None
) -> ChatConversation:
    conv = await get(session, conversation_id, lock=True)
    if conv.state in ("closed", "abandoned"):
        return conv
    if actor is not None and actor.role == "agent" and conv.agent_id != actor.id:
        raise Forbidden("only the agent holding the chat, or a supervisor, may close it")
    offered = conv.offered_to
    await _end(session, conv, state="closed", by=by)
    if offered is not None:
        await _withdraw(session, conv.id, offered, "closed")
    return conv


async def _end(session: AsyncSession, conv: ChatConversation, *, state: str, by: str) -> None:
    if conv.case_id is not None:
        await _system(session, conv, "left" if state == "abandoned" else "closed")
    agent = conv.agent_id
    conv.state = state
    conv.closed_by = by
    conv.closed_at = datetime.now(UTC)
    conv.offered_to = None
    conv.offer_expires_at = None
    await session.flush()
    await write_transcript(session, conv)
    await _recount(session, agent)
    await _announce_state(session, conv, by=by)


async def write_transcript(session: AsyncSession, conv: ChatConversation) -> None:
    """Put the whole conversation into its timeline entry (text for search, lines in meta)."""
    if conv.interaction_id is None:
        return
    entry = await session.get(Interaction, conv.interaction_id, with_for_update=True)
    if entry is None:
        return
    lines = await messages(session, conv.id)
    transcript = transcript_text(lines)
    started = conv.accepted_at or conv.queued_at
    entry.text = transcript[:MAX_TEXT_CHARS]
    entry.meta = {
        **entry.meta,
        "conversation_id": conv.id,
        "state": conv.state,
        "closed_by": conv.closed_by,
        "agent_id": conv.agent_id,
        "messages": [
            {
                "seq": m["seq"],
                "from": m["from"],
                "name": m["name"],
                "body": m["body"],
                "at": m["at"],
                "attachment": m["attachment"],
            }
            for m in lines
        ],
        "wait_seconds": _seconds(conv.queued_at, conv.accepted_at),
        "duration_seconds": _seconds(started, conv.closed_at),
        "csat": conv.csat_score,
        "csat_comment": conv.csat_comment,
    }
    await session.flush()


def _seconds(start: datetime | None, end: datetime | None) -> int | None:
    return max(0, round((end - start).total_seconds())) if start and end else None


def transcript_text(lines: Sequence[dict[str, Any]]) -> str:
    out = []
    for m in lines:
        at = datetime.fromisoformat(m["at"]).strftime("%H:%M")
        who = m["name"] or ("—" if m["from"] == "system" else m["from"])
        body = m["body"]
        if m["attachment"]:
            body = f"{body} [{m['attachment']['filename']}]".strip()
        out.append(f"[{at}] {who}: {body}")
    return "\n".join(out)


# -- after the chat: CSAT, transcript by email ----------------------------------------------


async def rate(
    session: AsyncSession, conversation_id: int, score: object, comment: object
) -> ChatConversation:
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise InvalidInput("score must be a whole number from 1 to 5", field="score")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 1000):
        raise InvalidInput("comment must be text of at most 1,000 characters", field="comment")
    conv = await get(session, conversation_id, lock=True)
    if conv.state not in ("closed", "abandoned"):
        raise Conflict("rate the chat once it has ended")
    if conv.csat_score is not None:
        raise Conflict("this chat has already been rated")
    conv.csat_score = score
    conv.csat_comment = (comment or "").strip() or None
    await session.flush()
    await write_transcript(session, conv)
    return conv


async def send_transcript(
    session: AsyncSession, settings: Settings, conversation_id: int, email: object
) -> str:
    """Queue the transcript to the visitor through the outbox (sent like any reply)."""
    from helpdesk.mail import outbound  # mail is optional at import time for the chat tests

    if not isinstance(email, str):
        raise InvalidInput("email is required", field="email")
    address = normalize_email(email)
    conv = await get(session, conversation_id, lock=True)
    if conv.case_id is None:
        raise Conflict("there is nothing to send yet")
    if conv.transcripts_sent >= MAX_TRANSCRIPTS:
        raise Conflict(f"the transcript was sent {MAX_TRANSCRIPTS} times already")
    case = await session.get(Case, conv.case_id)
    assert case is not None
    lang = lang_of(conv)
    message_id = outbound.new_message_id(settings.support_address)
    body = TRANSCRIPT_TEXT[lang].format(
        transcript=transcript_text(await messages(session, conv.id))
    )
    note = await add_interaction(
        session,
        customer_id=conv.customer_id,
        case_id=case.id,
        kind="system",
        direction="internal",
        text=f"chat transcript sent to {address}",
        meta={
            "transcript": True,
            "to": [address],
            "message_id": message_id,
            "outbox_state": "pending",
        },
    )
    message = outbound.build_message(
        sender_name=settings.support_name,
        sender_address=settings.support_address,
        to=[address],
        subject=case.subject,
        case_number=case.number,
        text=body,
        html=None,
        message_id=message_id,
        in_reply_to=None,
        references=[],
    )
    await outbound.enqueue(session, message=message, interaction_id=note.id, case_id=case.id)
    conv.transcripts_sent += 1
    await session.flush()
    return address


async def leave_message(
    session: AsyncSession, visitor: VisitorInput, body: object, *, region: str
) -> Case:
    """Offline mode: the visitor's message becomes an email case (agents answer by email)."""
    name = _clean_name(visitor.name)
    if not visitor.email:
        raise InvalidInput("email is required so that we can answer", field="email")
    email = normalize_email(visitor.email)
    text_body = check_body(body)
    lang = "ja" if (visitor.language or "ja").lower().startswith("ja") else "en"
    customer_id = await _customer_for_visitor(session, name, email, visitor.visitor_id, region)
    return await cases.create_case(
        session,
        cases.CaseInput(
            customer_id=customer_id,
            subject=OFFLINE_SUBJECT[lang],
            channel="email",
            body=text_body,
            team_id=await _team_id(session, visitor.team),
        ),
        author_user_id=None,
    )


# -- uploads ---------------------------------------------------------------------------------


async def store_file(
    session: AsyncSession,
    *,
    attachments_dir: Path,
    conversation_id: int,
    filename: str,
    content_type: str | None,
    data: bytes,
    max_bytes: int,
) -> ChatFile:
    if not data:
        raise InvalidInput("the file is empty", field="file")
    if len(data) > max_bytes:
        raise InvalidInput(f"the file is {len(data)} bytes; the limit is {max_bytes}", field="file")
    conv = await get(session, conversation_id)
    if conv.state in ("closed", "abandoned"):
        raise Conflict("this chat has ended", code="closed")
    digest = write_file(attachments_dir, data)
    name = safe_filename(filename)
    ctype = clean_content_type(content_type, name)
    file = ChatFile(
        conversation_id=conversation_id,
        filename=name,
        content_type=ctype,
        size=len(data),
        sha256=digest,
    )
    session.add(file)
    await session.flush()
    return file


async def get_file(session: AsyncSession, file_id: int) -> ChatFile:
    file = await session.get(ChatFile, file_id)
    if file is None:
        raise NotFound(f"file {file_id} not found")
    return file


# -- what agents see -------------------------------------------------------------------------


def _summary_query():  # type: ignore[no-untyped-def]
    unread = (
        select(func.count())
        .select_from(ChatMessage)
        .where(
            ChatMessage.conversation_id == ChatConversation.id,
            ChatMessage.sender == "visitor",
            ChatMessage.seq > ChatConversation.agent_read_seq,
        )
        .scalar_subquery()
    )
    preview = (
        select(ChatMessage.body)
        .where(ChatMessage.conversation_id == ChatConversation.id, ChatMessage.sender != "system")
        .order_by(ChatMessage.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    agent = select(User.name).where(User.id == ChatConversation.agent_id).scalar_subquery()
    return (
        select(
            ChatConversation,
            Team.name,
            agent,
            Case.number,
            unread,
            preview,
        )
        .outerjoin(Team, Team.id == ChatConversation.team_id)
        .outerjoin(Case, Case.id == ChatConversation.case_id)
    )


def _summary(row: Any) -> dict[str, Any]:
    conv, team, agent_name, number, unread, preview = row

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": conv.id,
        "state": conv.state,
        "team_id": conv.team_id,
        "team": team,
        "visitor": {"name": conv.visitor_name, "email": conv.visitor_email},
        "language": conv.language,
        "customer_id": conv.customer_id,
        "case_id": conv.case_id,
        "case_number": number,
        "agent_id": conv.agent_id,
        "agent_name": agent_name,
        "seq": conv.last_seq,
        "agent_read_seq": conv.agent_read_seq,
        "unread": int(unread or 0) if conv.agent_id else 0,
        "queued_at": iso(conv.queued_at),
        "accepted_at": iso(conv.accepted_at),
        "closed_at": iso(conv.closed_at),
        "last_message_at": iso(conv.last_message_at),
        "offer_expires_at": iso(conv.offer_expires_at),
        "csat": conv.csat_score,
        "preview": (preview or "")[:120],
    }


async def summary(session: AsyncSession, conversation_id: int) -> dict[str, Any]:
    row = (
        await session.execute(_summary_query().where(ChatConversation.id == conversation_id))
    ).first()
    if row is None:
        raise NotFound(f"chat {conversation_id} not found")
    return _summary(row)


async def view(session: AsyncSession, conversation_id: int, user: User) -> dict[str, Any]:
    conv = await get(session, conversation_id)
    _check_may_see(conv, user)
    return await summary(session, conversation_id)


async def lists_for(session: AsyncSession, user: User) -> dict[str, list[dict[str, Any]]]:
    """The chats panel: offers to me, my active chats, and everyone waiting."""
    q = _summary_query()
    offered = await session.execute(
        q.where(
            ChatConversation.state == "offered", ChatConversation.offered_to == user.id
        ).order_by(ChatConversation.queued_at)
    )
    active = await session.execute(
        q.where(ChatConversation.state == "active", ChatConversation.agent_id == user.id).order_by(
            ChatConversation.accepted_at
        )
    )
    waiting_where = [ChatConversation.state.in_(WAITING)]
    scope = visibility.scope_for(user)
    if scope is not None:  # another team's queue is not theirs to see
        waiting_where.append(
            or_(ChatConversation.team_id.is_(None), ChatConversation.team_id == scope.team_id)
        )
    waiting = await session.execute(
        q.where(*waiting_where).order_by(ChatConversation.queued_at).limit(200)
    )
    return {
        "offered": [_summary(r) for r in offered.all()],
        "active": [_summary(r) for r in active.all()],
        "waiting": [_summary(r) for r in waiting.all()],
    }


async def active_for_case(session: AsyncSession, case_id: int) -> ChatConversation | None:
    return await session.scalar(
        select(ChatConversation)
        .where(ChatConversation.case_id == case_id, ChatConversation.state.in_(OPEN))
        .order_by(ChatConversation.id.desc())
        .limit(1)
    )


async def canned_responses(
    session: AsyncSession, *, lang: str | None = None, q: str | None = None
) -> list[CannedResponse]:
    stmt = select(CannedResponse).order_by(CannedResponse.title).limit(200)
    if lang:
        stmt = stmt.where((CannedResponse.language == lang) | CannedResponse.language.is_(None))
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(
            CannedResponse.title.ilike(like)
            | CannedResponse.body.ilike(like)
            | CannedResponse.shortcut.ilike(like)
        )
    return list((await session.scalars(stmt)).all())


# -- events ---------------------------------------------------------------------------------


async def _announce_state(
    session: AsyncSession,
    conv: ChatConversation,
    *,
    by: str | None,
    also: Sequence[int | None] = (),
) -> None:
    """Tell the visitor's tabs (their frame) and every staff socket (the panel's lists)."""
    agent_name = None
    if conv.agent_id is not None:
        agent_name = await session.scalar(select(User.name).where(User.id == conv.agent_id))
    visible = "queued" if conv.state == "offered" else conv.state
    await events.publish(
        session,
        events.Event(
            "chat_state",
            {
                "conversation": conv.id,
                "state": visible,
                "agent": {"name": agent_name} if agent_name and visible == "active" else None,
                "by": by,
            },
            topics=(f"chat:{conv.id}",),
            team=conv.team_id,
        ),
    )
    # Staff: the agents concerned and the supervisors. Other agents' panels refresh their
    # waiting list from GET /api/chats: a frame to every agent for every chat's every step
    # costs more than it tells them (routing, not the agents, picks who takes a chat).
    concerned = {conv.agent_id, conv.offered_to, *also} - {None}
    await events.publish(
        session,
        events.Event(
            "chat_state",
            {"conversation": await summary(session, conv.id), "state": conv.state, "by": by},
            users=tuple(sorted(u for u in concerned if u is not None)),
            roles=("supervisor", "admin"),
            team=conv.team_id,
        ),
    )


async def _withdraw(session: AsyncSession, conversation_id: int, user_id: int, reason: str) -> None:
    await events.publish(
        session,
        events.Event(
            "chat_offer_withdrawn",
            {"conversation": conversation_id, "reason": reason},
            users=(user_id,),
        ),
    )


# -- routing ---------------------------------------------------------------------------------

_PICK_AGENT = text(
    """
    SELECT u.id
    FROM users u
    JOIN agent_presence p ON p.user_id = u.id
    CROSS JOIN LATERAL (
        SELECT (SELECT count(*) FROM chat_conversations c
                WHERE c.state = 'active' AND c.agent_id = u.id)
             + (SELECT count(*) FROM chat_conversations c
                WHERE c.state = 'offered' AND c.offered_to = u.id) AS load
    ) l
    WHERE u.is_active AND p.status = 'available' AND NOT p.on_call
      AND EXISTS (SELECT 1 FROM agent_sockets s WHERE s.user_id = u.id)
      AND (CAST(:team AS integer) IS NULL OR u.team_id = :team)
      AND NOT (u.id = ANY(CAST(:skip AS integer[])))
      AND l.load < p.chat_capacity
    ORDER BY l.load,
             (SELECT max(c.accepted_at) FROM chat_conversations c WHERE c.agent_id = u.id)
                 ASC NULLS FIRST,
             u.id
    LIMIT 1
    """
)


@dataclass
class Routed:
    worked: bool = False
    offered: int = 0
    lapsed: int = 0
    abandoned: int = 0
    positions: int = 0


async def route(session: AsyncSession, *, offer_seconds: float, abandon_seconds: float) -> Routed:
    """One pass of the router; a no-op while another process holds the router lock."""
    done = Routed()
    if not await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ROUTER_LOCK}):
        return done
    done.worked = True
    lapsed = (
        await session.execute(
            text(
                """
                UPDATE chat_conversations
                SET state = 'queued', passed_over = array_append(passed_over, offered_to),
                    offered_to = NULL, offer_expires_at = NULL
                WHERE id IN (SELECT id FROM chat_conversations
                             WHERE state = 'offered' AND offer_expires_at <= now()
                             FOR UPDATE SKIP LOCKED)
                RETURNING id, passed_over[cardinality(passed_over)]
                """
            )
        )
    ).all()
    for conv_id, agent_id in lapsed:
        await _withdraw(session, conv_id, agent_id, "timeout")
    done.lapsed = len(lapsed)

    gone = (
        await session.scalars(
            select(ChatConversation)
            .where(
                ChatConversation.state.in_(("new", *WAITING)),
                ChatConversation.visitor_seen_at
                < func.now() - text("make_interval(secs => :secs)"),
            )
            .with_for_update(skip_locked=True)
            .limit(100),
            {"secs": abandon_seconds},
        )
    ).all()
    for conv in gone:
        offered = conv.offered_to
        await _end(session, conv, state="abandoned", by="system")
        if offered is not None:
            await _withdraw(session, conv.id, offered, "abandoned")
    done.abandoned = len(gone)

    queued = (
        await session.scalars(
            select(ChatConversation)
            .where(ChatConversation.state == "queued")
            .order_by(ChatConversation.queued_at, ChatConversation.id)
            .with_for_update(skip_locked=True)
            .limit(100)
        )
    ).all()
    full: set[int | None] = set()  # teams with nobody left to offer to
    for conv in queued:
        if conv.team_id in full:
            continue
        agent_id = await session.scalar(
            _PICK_AGENT, {"team": conv.team_id, "skip": list(conv.passed_over)}
        )
        if agent_id is None and conv.passed_over:
            # Everyone eligible has let it lapse once: start another round.
            agent_id = await session.scalar(_PICK_AGENT, {"team": conv.team_id, "skip": []})
            if agent_id is not None:
                conv.passed_over = []
        if agent_id is None:
            full.add(conv.team_id)
            continue
        conv.state = "offered"
        conv.offered_to = agent_id
        conv.offer_expires_at = datetime.now(UTC) + timedelta(seconds=offer_seconds)
        await session.flush()
        data = await summary(session, conv.id)
        await events.publish(
            session,
            events.Event(
                "chat_offered",
                {"conversation": data, "expires_at": data["offer_expires_at"]},
                users=(agent_id,),
            ),
        )
        done.offered += 1
    done.positions = await _update_positions(session)
    return done


async def _update_positions(session: AsyncSession) -> int:
    changed = (
        await session.execute(
            text(
                """
                WITH w AS (
                    SELECT id, team_id, last_position,
                           row_number() OVER (PARTITION BY team_id
                                              ORDER BY queued_at, id) AS pos
                    FROM chat_conversations WHERE state IN ('queued', 'offered')
                )
                UPDATE chat_conversations c SET last_position = w.pos
                FROM w WHERE c.id = w.id AND w.last_position IS DISTINCT FROM w.pos
                RETURNING c.id, c.team_id, w.pos
                """
            )
        )
    ).all()
    if not changed:
        return 0
    stats = (
        await session.execute(
            text(
                """
                SELECT team_id, avg(extract(epoch FROM accepted_at - queued_at))
                FROM chat_conversations
                WHERE accepted_at > now() - interval '1 hour' AND queued_at IS NOT NULL
                GROUP BY team_id
                """
            )
        )
    ).all()
    average = {team: float(avg) for team, avg in stats if avg is not None}
    overall = sum(average.values()) / len(average) if average else 60.0
    agents: dict[int | None, int] = {}
    for conv_id, team_id, pos in changed:
        if team_id not in agents:
            agents[team_id] = max(1, await agents_taking_chats(session, team_id))
        wait = round(average.get(team_id, overall) * pos / agents[team_id])
        await events.publish(
            session,
            events.Event(
                "chat_queue",
                {"conversation": conv_id, "position": int(pos), "wait_seconds": wait},
                topics=(f"chat:{conv_id}",),
            ),
        )
    return len(changed)


async def queue_position(
    session: AsyncSession, conv: ChatConversation
) -> tuple[int | None, int | None]:
    """Position and estimated wait for `welcome` (the router pushes later changes)."""
    if conv.state not in WAITING or conv.queued_at is None:
        return None, None
    pos = await session.scalar(
        select(func.count())
        .select_from(ChatConversation)
        .where(
            ChatConversation.state.in_(WAITING),
            ChatConversation.team_id.is_not_distinct_from(conv.team_id),
            (ChatConversation.queued_at < conv.queued_at)
            | ((ChatConversation.queued_at == conv.queued_at) & (ChatConversation.id <= conv.id)),
        )
    )
    avg = await session.scalar(
        text(
            """
            SELECT avg(extract(epoch FROM accepted_at - queued_at)) FROM chat_conversations
            WHERE accepted_at > now() - interval '1 hour' AND queued_at IS NOT NULL
              AND team_id IS NOT DISTINCT FROM :team
            """
        ),
        {"team": conv.team_id},
    )
    agents = max(1, await agents_taking_chats(session, conv.team_id))
    position = int(pos or 1)
    return position, round((float(avg) if avg is not None else 60.0) * position / agents)


async def visitors_seen(session: AsyncSession, conversation_ids: Sequence[int]) -> None:
    """This process still holds sockets of these conversations' visitors.

    Only waiting chats can be abandoned, so only their rows are refreshed, and only those
    not refreshed for a few seconds, in id order, skipping rows another transaction holds
    (the router, a message): a heartbeat must neither rewrite every chat in progress (and
    hold their locks while messages wait) nor deadlock with the work on them.
    """
    if not conversation_ids:
        return
    stale = (
        select(ChatConversation.id)
        .where(
            ChatConversation.id.in_(sorted(conversation_ids)),
            ChatConversation.state.in_(("new", *WAITING)),
            ChatConversation.visitor_seen_at < func.now() - timedelta(seconds=5),
        )
        .order_by(ChatConversation.id)
        .with_for_update(skip_locked=True)
    )
    await session.execute(
        update(ChatConversation)
        .where(ChatConversation.id.in_(stale.scalar_subquery()))
        .values(visitor_seen_at=func.now())
    )
