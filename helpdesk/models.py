"""The desk's tables, as typed SQLAlchemy models. The schema itself is made by Alembic only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("agent", "supervisor", "admin")
IDENTITY_KINDS = ("phone", "email", "chat", "external")
CASE_STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("phone", "email", "chat", "web", "other")
INTERACTION_KINDS = ("call", "email", "chat", "note", "system")
DIRECTIONS = ("in", "out", "internal")
TIERS = ("standard", "silver", "gold", "platinum")
LANGUAGES = ("ja", "en")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    # Fetch server-side defaults (ids, timestamps) with RETURNING at flush time: with async
    # sessions an expired attribute cannot lazy-load, so it must never be left expired.
    __mapper_args__: ClassVar[dict[str, object]] = {"eager_defaults": True}


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    """An agent, supervisor or admin: someone who logs in to the desk."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="ck_users_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    extension: Mapped[str | None] = mapped_column(String(32), unique=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    language: Mapped[str | None] = mapped_column(String(8))
    timezone: Mapped[str | None] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Every token issued before this moment is void (deactivation, "sign out everywhere").
    tokens_valid_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # TOTP (helpdesk/auth.py): a secret is kept unconfirmed until a code from it turns TOTP
    # on (`totp_enabled_at`); the last time step used, so that no code works twice.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    totp_last_counter: Mapped[int | None] = mapped_column(BigInteger)

    team: Mapped[Team | None] = relationship(lazy="raise")


class RevokedToken(Base):
    """JWT ids revoked by logout; rows are useless after `expires_at` and may be purged."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LoginFailure(Base):
    """Failed logins, kept in the database so every app process counts the same failures."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_account_at", "account", "at"),
        Index("ix_login_failures_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account: Mapped[str] = mapped_column(String(320))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint(_one_of("tier", TIERS), name="ck_customers_tier"),
        Index(
            "ix_customers_search_text_trgm",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_kana: Mapped[str | None] = mapped_column(String(200))
    organization: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(8))
    tier: Mapped[str] = mapped_column(String(20), server_default="standard")
    notes: Mapped[str | None] = mapped_column(Text)
    # Name, kana and organisation folded (NFKC, lower case, katakana as hiragana) so one
    # trigram index answers "やまだ", "ヤマダ" and "山田" searches alike.
    search_text: Mapped[str] = mapped_column(Text, server_default="")
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    # Data rights (helpdesk/privacy.py, migration 0011). `consent` is {purpose: {"granted",
    # "at", "source"}}; `contact_preferences` is {"channels", "language", "do_not_contact"}.
    consent: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    contact_preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=sql_text("'{}'::jsonb")
    )
    # Set once, by privacy.erase_customer: the row stays (a placeholder name, no personal
    # fields) so that cases, calls and chats, and the statistics over them, still add up.
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    identities: Mapped[list[ContactIdentity]] = relationship(
        back_populates="customer", lazy="raise", order_by="ContactIdentity.id"
    )


class ContactIdentity(Base):
    """One way to reach a customer: a phone number, an email address, a chat or external id.

    The normalized value is unique per customer and kind, not globally: an office number or a
    shared mailbox can belong to several customers, and the screen-pop must offer them all.
    """

    __tablename__ = "contact_identities"
    __table_args__ = (
        CheckConstraint(_one_of("kind", IDENTITY_KINDS), name="ck_contact_identities_kind"),
        UniqueConstraint("customer_id", "kind", "normalized", name="uq_identity_customer_value"),
        Index("ix_contact_identities_lookup", "kind", "normalized"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    raw_value: Mapped[str] = mapped_column(String(320))
    normalized: Mapped[str] = mapped_column(String(320))
    verified: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"))
    is_primary: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set from a delivery-status notification; mail to a bouncing address is not sent.
    bouncing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bounce_reason: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    customer: Mapped[Customer] = relationship(back_populates="identities", lazy="raise")


case_number_seq = Sequence("case_number_seq", start=1001)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(_one_of("status", CASE_STATUSES), name="ck_cases_status"),
        CheckConstraint(_one_of("priority", PRIORITIES), name="ck_cases_priority"),
        CheckConstraint(_one_of("channel", CHANNELS), name="ck_cases_channel"),
        Index("ix_cases_status_updated", "status", "updated_at"),
        Index("ix_cases_assignee_status", "assignee_id", "status"),
        Index("ix_cases_customer", "customer_id", "status"),
        Index("ix_cases_tags", "tags", postgresql_using="gin"),
        # The board and the service level (helpdesk/metrics.py, migration 0010).
        Index(
            "ix_cases_open_team",
            "team_id",
            "assignee_id",
            "id",
            postgresql_where=sql_text("status IN ('new', 'open', 'pending', 'on_hold')"),
        ),
        Index(
            "ix_cases_solved_at", "solved_at", postgresql_where=sql_text("solved_at IS NOT NULL")
        ),
        Index(
            "ix_cases_follow_up_of",
            "follow_up_of_id",
            postgresql_where=sql_text("follow_up_of_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(
        BigInteger, case_number_seq, server_default=case_number_seq.next_value(), unique=True
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    subject: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), server_default="new")
    priority: Mapped[str] = mapped_column(String(16), server_default="normal")
    channel: Mapped[str] = mapped_column(String(16))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), index=True
    )
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    solved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A reply to a closed case opens a follow-up that points back at it (issue 5).
    follow_up_of_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))

    customer: Mapped[Customer] = relationship(lazy="raise")
    assignee: Mapped[User | None] = relationship(lazy="raise")
    team: Mapped[Team | None] = relationship(lazy="raise")


class Interaction(Base):
    """One entry on a customer's timeline: a call, an email, a chat, a note or a system event."""

    __tablename__ = "interactions"
    __table_args__ = (
        CheckConstraint(_one_of("kind", INTERACTION_KINDS), name="ck_interactions_kind"),
        CheckConstraint(_one_of("direction", DIRECTIONS), name="ck_interactions_direction"),
        Index("ix_interactions_customer_timeline", "customer_id", "occurred_at", "id"),
        Index("ix_interactions_case_timeline", "case_id", "occurred_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    subject: Mapped[str | None] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text, server_default="")
    html: Mapped[str | None] = mapped_column(Text)  # always sanitized before it is stored
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    author: Mapped[User | None] = relationship(lazy="raise")
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="interaction", lazy="raise", order_by="Attachment.id"
    )


class Attachment(Base):
    """A file on an interaction; the bytes live under the data dir, named by their SHA-256."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    interaction_id: Mapped[int] = mapped_column(
        ForeignKey("interactions.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    interaction: Mapped[Interaction] = relationship(back_populates="attachments", lazy="raise")


class AuditRecord(Base):
    """Who did what to which record, and when: written for every destructive or merging act."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[int] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql_text("'{}'::jsonb"))
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


PRESENCE_STATUSES = ("available", "busy", "away", "offline")


class AgentPresence(Base):
    """What an agent chose (`status`) and the facts that make them busy regardless."""

    __tablename__ = "agent_presence"
    __table_args__ = (
        CheckConstraint(_one_of("status", PRESENCE_STATUSES), name="ck_agent_presence_status"),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), server_default="offline")
    on_call: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"))
    active_chats: Mapped[int] = mapped_column(Integer, server_default="0")
    chat_capacity: Mapped[int] = mapped_column(Integer, server_default="3")
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AgentSocket(Base):
    """An open agent socket, in whichever process holds it; refreshed by that process's
    heartbeat so that sockets of a crashed process age out."""

    __tablename__ = "agent_sockets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    process: Mapped[str] = mapped_column(String(200), index=True)
    connected_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class HubEvent(Base):
    """An event too large for a NOTIFY payload, stored for listeners to load by id."""

    __tablename__ = "hub_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


CALL_STATES = ("ringing", "answered", "missed", "abandoned", "completed")


class Call(Base):
    """One phone call as the call log keeps it, keyed by the PBX's call id."""

    __tablename__ = "calls"
    __table_args__ = (
        CheckConstraint(_one_of("state", CALL_STATES), name="ck_calls_state"),
        CheckConstraint(_one_of("direction", ("in", "out")), name="ck_calls_direction"),
        Index("ix_calls_state_started", "state", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(200), unique=True)
    direction: Mapped[str] = mapped_column(String(8))
    from_number: Mapped[str] = mapped_column(String(64), server_default="")
    to_number: Mapped[str] = mapped_column(String(64), server_default="")
    # The customer's number in E.164 (the caller inbound, the callee outbound); None when
    # withheld or unparseable.
    customer_number: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str | None] = mapped_column(String(100))
    ringing_user_ids: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=sql_text("'{}'::integer[]")
    )
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL")
    )
    callback_case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL")
    )
    cause: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str] = mapped_column(Text, server_default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def wait_seconds(self) -> int | None:
        """Ring to answer, or ring to hang-up for a call never answered."""
        end = self.answered_at or self.ended_at
        return max(0, round((end - self.started_at).total_seconds())) if end else None

    @property
    def talk_seconds(self) -> int | None:
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0, round((self.ended_at - self.answered_at).total_seconds()))


class CallEventSeen(Base):
    """Every call event applied, so that a redelivered one is a no-op."""

    __tablename__ = "call_events_seen"

    call_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event: Mapped[str] = mapped_column(String(16), primary_key=True)
    agents: Mapped[str] = mapped_column(String(2000), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class MailMessage(Base):
    """Every Message-ID we have received or sent, so replies thread and redelivery is a no-op."""

    __tablename__ = "mail_messages"
    __table_args__ = (
        CheckConstraint(_one_of("direction", ("in", "out")), name="ck_mail_messages_direction"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    direction: Mapped[str] = mapped_column(String(8))
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL"), index=True
    )
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"), index=True
    )
    # Lowercased From address, to tell whether a `[#number]` subject comes from someone
    # already known on that case.
    sender: Mapped[str] = mapped_column(String(320), server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


OUTBOX_STATES = ("pending", "sent", "failed")


class OutboxMail(Base):
    """A message committed with its interaction and sent later, so an outage only delays it."""

    __tablename__ = "mail_outbox"
    __table_args__ = (
        CheckConstraint(_one_of("state", OUTBOX_STATES), name="ck_mail_outbox_state"),
        Index(
            "ix_mail_outbox_due", "next_attempt_at", postgresql_where=sql_text("state = 'pending'")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL"), index=True
    )
    sender: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(ARRAY(Text))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MailboxCursor(Base):
    """Where an IMAP poller stopped, so a restart neither refetches nor skips."""

    __tablename__ = "mailbox_cursors"

    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


CHAT_STATES = ("new", "queued", "offered", "active", "closed", "abandoned")
CHAT_SENDERS = ("visitor", "agent", "system")


class ChatConversation(Base):
    """One website chat: who the visitor is, where it is in routing, and its message counter.

    `last_seq` numbers the conversation's messages; taking the next number locks the row,
    so messages commit (and are announced) in sequence order.
    """

    __tablename__ = "chat_conversations"
    __table_args__ = (
        CheckConstraint(_one_of("state", CHAT_STATES), name="ck_chat_conversations_state"),
        CheckConstraint("csat_score BETWEEN 1 AND 5", name="ck_chat_conversations_csat"),
        Index(
            "ix_chat_conversations_waiting",
            "team_id",
            "queued_at",
            postgresql_where=sql_text("state IN ('queued', 'offered')"),
        ),
        Index(
            "ix_chat_conversations_agent_active",
            "agent_id",
            postgresql_where=sql_text("state = 'active'"),
        ),
        Index(
            "ix_chat_conversations_offered_to",
            "offered_to",
            postgresql_where=sql_text("state = 'offered'"),
        ),
        # The router's tie-break, "whose last chat is oldest": one backward index probe.
        Index("ix_chat_conversations_agent_accepted", "agent_id", "accepted_at"),
        # CSAT by when the chat ended (helpdesk/metrics.py, migration 0010).
        Index(
            "ix_chat_conversations_rated",
            "closed_at",
            postgresql_where=sql_text("csat_score IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), server_default="new")
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL"), index=True
    )
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("interactions.id", ondelete="SET NULL")
    )
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    offered_to: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    offer_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Agents who let this chat's offer lapse; skipped until every eligible agent has had it.
    passed_over: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=sql_text("'{}'::integer[]")
    )
    visitor_name: Mapped[str] = mapped_column(String(100))
    visitor_email: Mapped[str | None] = mapped_column(String(320))
    visitor_id: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    page_url: Mapped[str | None] = mapped_column(String(2000))
    last_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    visitor_ack_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    agent_read_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    last_position: Mapped[int | None] = mapped_column(Integer)
    closed_by: Mapped[str | None] = mapped_column(String(16))
    csat_score: Mapped[int | None] = mapped_column(Integer)
    csat_comment: Mapped[str | None] = mapped_column(Text)
    transcripts_sent: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed while a socket of the visitor is open (by the process holding it).
    visitor_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ChatFile(Base):
    """A file a visitor uploaded into a chat; bytes under the data dir, named by SHA-256."""

    __tablename__ = "chat_files"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("chat_conversations.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ChatMessage(Base):
    """A message of a conversation, numbered; `client_id` makes a resend a no-op."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        CheckConstraint(_one_of("sender", CHAT_SENDERS), name="ck_chat_messages_sender"),
        UniqueConstraint("conversation_id", "client_id", name="uq_chat_messages_client_id"),
    )

    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("chat_conversations.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(8))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200), server_default="")
    body: Mapped[str] = mapped_column(Text, server_default="")
    file_id: Mapped[int | None] = mapped_column(ForeignKey("chat_files.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CannedResponse(Base):
    """A prepared answer agents insert into chats and replies (`/shortcut` in the composer)."""

    __tablename__ = "canned_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    shortcut: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class BusinessCalendarRecord(Base):
    """A named business calendar as stored; `sla.calendar_of(row)` gives the arithmetic.

    The columns are `BusinessCalendar.as_dict()` spread out, so a row round-trips exactly.
    """

    __tablename__ = "business_calendars"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    timezone: Mapped[str] = mapped_column(String(64))
    weekly: Mapped[dict[str, Any]] = mapped_column(JSONB)
    holiday_region: Mapped[str | None] = mapped_column(String(16))
    closed_dates: Mapped[list[str]] = mapped_column(JSONB, server_default=sql_text("'[]'::jsonb"))
    special_hours: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=sql_text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SlaPolicy(Base):
    """Targets in business minutes for the cases its `conditions` match; the first active
    policy by `position` wins. A null target means no clock of that kind."""

    __tablename__ = "sla_policies"
    __table_args__ = (
        CheckConstraint("warning_percent BETWEEN 1 AND 100", name="ck_sla_policies_warning"),
        CheckConstraint(
            "first_response_minutes > 0 AND next_response_minutes > 0 AND resolution_minutes > 0",
            name="ck_sla_policies_targets",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("true"))
    # {"priority": [...], "channel": [...], "tier": [...], "team_id": [...]}, each optional;
    # checked by sla.validate_conditions, matched by sla.choose_policy.
    conditions: Mapped[dict[str, list[Any]]] = mapped_column(
        JSONB, server_default=sql_text("'{}'::jsonb")
    )
    first_response_minutes: Mapped[int | None] = mapped_column(Integer)
    next_response_minutes: Mapped[int | None] = mapped_column(Integer)
    resolution_minutes: Mapped[int | None] = mapped_column(Integer)
    warning_percent: Mapped[int] = mapped_column(Integer, server_default="80")
    # What the escalation worker does to the case, besides announcing it, when one of this
    # policy's clocks breaches: raise its priority one step (never past urgent) and/or move it,
    # unassigned, to a team. See sla_worker.breach_changes.
    breach_raise_priority: Mapped[bool] = mapped_column(Boolean, server_default=sql_text("false"))
    breach_reassign_team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL")
    )
    # Clocks keep counting on their policy's calendar: deactivate a policy, do not delete it.
    calendar_id: Mapped[int] = mapped_column(
        ForeignKey("business_calendars.id", ondelete="RESTRICT")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    calendar: Mapped[BusinessCalendarRecord] = relationship(lazy="raise")

    def target_minutes(self, kind: str) -> int | None:
        return {
            "first_response": self.first_response_minutes,
            "next_response": self.next_response_minutes,
            "resolution": self.resolution_minutes,
        }[kind]


SLA_CLOCK_KINDS = ("first_response", "next_response", "resolution")
SLA_CLOCK_STATES = ("active", "paused", "met", "breached")


class SlaClock(Base):
    """One SLA target of one case, with its stored deadline.

    Amounts are business minutes on the policy's calendar. `paused_minutes` is the business
    time the clock stood still (pending, or solved for resolution), so the time counted
    against the target is `between(started_at, now) - paused_minutes`. While paused,
    `deadline_at` and `warning_at` are null and `remaining_minutes` holds what was left.
    """

    __tablename__ = "sla_clocks"
    __table_args__ = (
        CheckConstraint(_one_of("kind", SLA_CLOCK_KINDS), name="ck_sla_clocks_kind"),
        CheckConstraint(_one_of("state", SLA_CLOCK_STATES), name="ck_sla_clocks_state"),
        UniqueConstraint("case_id", "kind", name="uq_sla_clocks_case_kind"),
        # The worker's two probes: running clocks by deadline, unwarned ones by warning time.
        Index(
            "ix_sla_clocks_due_deadline",
            "deadline_at",
            postgresql_where=sql_text("state = 'active'"),
        ),
        Index(
            "ix_sla_clocks_due_warning",
            "warning_at",
            postgresql_where=sql_text("state = 'active' AND warned_at IS NULL"),
        ),
        # The board's clocks at risk, in breach and waiting, and the service level's settled
        # first responses (helpdesk/metrics.py, migration 0010).
        Index(
            "ix_sla_clocks_active_warning",
            "warning_at",
            "deadline_at",
            "case_id",
            postgresql_where=sql_text("state = 'active'"),
        ),
        Index(
            "ix_sla_clocks_breached_unmet",
            "deadline_at",
            "case_id",
            postgresql_where=sql_text("state = 'breached' AND met_at IS NULL"),
        ),
        Index(
            "ix_sla_clocks_waiting",
            "started_at",
            "case_id",
            postgresql_where=sql_text(
                "kind IN ('first_response', 'next_response') AND state IN ('active', 'breached')"
                " AND met_at IS NULL"
            ),
        ),
        Index(
            "ix_sla_clocks_first_response_met",
            "met_at",
            postgresql_where=sql_text("kind = 'first_response' AND state = 'met'"),
        ),
        Index(
            "ix_sla_clocks_first_response_breached",
            "breached_at",
            postgresql_where=sql_text("kind = 'first_response' AND state = 'breached'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    policy_id: Mapped[int] = mapped_column(
        ForeignKey("sla_policies.id", ondelete="RESTRICT"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), server_default="active")
    target_minutes: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    warning_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paused_minutes: Mapped[float] = mapped_column(server_default="0")
    remaining_minutes: Mapped[float | None] = mapped_column()
    met_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    breach_fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


__all__ = [
    "CALL_STATES",
    "CASE_STATUSES",
    "CHANNELS",
    "CHAT_SENDERS",
    "CHAT_STATES",
    "DIRECTIONS",
    "IDENTITY_KINDS",
    "INTERACTION_KINDS",
    "LANGUAGES",
    "OUTBOX_STATES",
    "PRESENCE_STATUSES",
    "PRIORITIES",
    "ROLES",
    "SLA_CLOCK_KINDS",
    "SLA_CLOCK_STATES",
    "TIERS",
    "AgentPresence",
    "AgentSocket",
    "Attachment",
    "AuditRecord",
    "Base",
    "BusinessCalendarRecord",
    "Call",
    "CallEventSeen",
    "CannedResponse",
    "Case",
    "ChatConversation",
    "ChatFile",
    "ChatMessage",
    "ContactIdentity",
    "Customer",
    "HubEvent",
    "Interaction",
    "LoginFailure",
    "MailMessage",
    "MailboxCursor",
    "OutboxMail",
    "RevokedToken",
    "SlaClock",
    "SlaPolicy",
    "Team",
    "User",
]


# The knowledge base's tables live with their package but in this metadata (one schema,
# one Alembic history); imported last because they build on `Base` above.
import knowledge_base.models  # noqa: E402,F401
