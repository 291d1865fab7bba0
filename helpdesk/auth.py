"""Who may use the desk: password hashes, access tokens, revocation and login throttling."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import events
from helpdesk.errors import Conflict, InvalidInput, TooManyRequests, Unauthorized
from helpdesk.identities import normalize_email
from helpdesk.models import ROLES, LoginFailure, RevokedToken, Team, User

ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 10
# Failures from one address across many accounts (password spraying) get a larger allowance
# than failures on one account, because a call center's agents often share one office NAT.
ADDRESS_FAILURE_FACTOR = 4

_hasher = PasswordHasher()
# Verifying against a real hash even for unknown accounts keeps response times the same, so
# the login endpoint does not reveal which email addresses have accounts.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    role: str
    jti: str
    issued_at: datetime
    expires_at: datetime


def issue_token(user: User, secret: str, ttl_seconds: int, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    payload = {
        "sub": str(user.id),
        "role": user.role,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> TokenClaims:
    """Check signature and expiry; revocation is checked separately against the database."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "exp", "iat", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    try:
        user_id = int(payload["sub"])
    except (TypeError, ValueError) as exc:
        raise Unauthorized("invalid token: bad subject") from exc
    return TokenClaims(
        user_id=user_id,
        role=str(payload["role"]),
        jti=str(payload["jti"]),
        issued_at=datetime.fromtimestamp(payload["iat"], UTC),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
    )


async def user_for_token(
    session: AsyncSession, token: str, secret: str
) -> tuple[User, TokenClaims]:
    """The active user a token speaks for, or Unauthorized (expired, revoked, deactivated)."""
    claims = decode_token(token, secret)
    if await session.get(RevokedToken, claims.jti) is not None:
        raise Unauthorized("token revoked")
    user = await session.get(User, claims.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("account is not active")
    return user, claims


async def revoke_token(session: AsyncSession, claims: TokenClaims) -> None:
    """Logout: the token stops working everywhere at once, not just in this browser."""
    if await session.get(RevokedToken, claims.jti) is None:
        session.add(RevokedToken(jti=claims.jti, expires_at=claims.expires_at))
    # Sockets opened with this token close too (code 4401, "token revoked").
    await events.publish(
        session,
        events.Event("session_revoked", {"jti": claims.jti}, users=(claims.user_id,)),
    )
    await session.execute(delete(RevokedToken).where(RevokedToken.expires_at < func.now()))


async def authenticate(
    session: AsyncSession,
    email: str,
    password: str,
    address: str,
    *,
    max_failures: int,
    window_seconds: int,
    now: datetime | None = None,
) -> User | None:
    """The user for these credentials, or None after recording the failure.

    Returns rather than raises on a wrong password so that the caller commits the failure row:
    the count of recent failures per account and per address is what answers 429, across
    every app process.
    """
    now = now or datetime.now(UTC)
    try:
        account = normalize_email(email)
    except InvalidInput:
        account = (email or "").strip().lower()[:320]
    since = now - timedelta(seconds=window_seconds)
    by_account = await session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.account == account, LoginFailure.at > since)
    )
    by_address = await session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.address == address, LoginFailure.at > since)
    )
    if (by_account or 0) >= max_failures or (by_address or 0) >= (
        max_failures * ADDRESS_FAILURE_FACTOR
    ):
        raise TooManyRequests("too many failed logins; try again later", retry_after=window_seconds)

    user = await session.scalar(select(User).where(User.email == account))
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password or "")
    if not ok or user is None or not user.is_active:
        session.add(LoginFailure(account=account, address=address[:64], at=now))
        return None
    await session.execute(delete(LoginFailure).where(LoginFailure.account == account))
    user.last_login_at = now
    return user


async def create_user(
    session: AsyncSession,
    email: str,
    name: str,
    role: str,
    password: str,
    *,
    extension: str | None = None,
    team_name: str | None = None,
    language: str | None = None,
) -> User:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    address = normalize_email(email)
    team_id = None
    if team_name:
        team = await session.scalar(select(Team).where(Team.name == team_name))
        if team is None:
            team = Team(name=team_name)
            session.add(team)
            await session.flush()
        team_id = team.id
    user = User(
        email=address,
        name=name or address.split("@")[0],
        role=role,
        password_hash=hash_password(password),
        extension=extension or None,
        team_id=team_id,
        language=language,
    )
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("a user with this email or extension already exists") from exc
    return user
