"""Who may use the desk: password hashes, access tokens, revocation and login throttling."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import audit, events
from helpdesk.errors import Conflict, InvalidInput, TooManyRequests, Unauthorized
from helpdesk.identities import normalize_email
from helpdesk.models import ROLES, LoginFailure, RevokedToken, Team, User

ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 12
# The most common passwords long enough to pass the length rule (from the public breach
# corpora's top lists); a policy, not a breach check.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012", "1234567890123", "12345678901234", "123123123123", "111111111111",
        "000000000000", "password1234", "password12345", "password123456", "passwordpassword",
        "password1234!", "qwertyuiop12", "qwertyuiop123", "qwertyuiopasdf", "1q2w3e4r5t6y",
        "1qaz2wsx3edc", "1qaz2wsx3edc4rfv", "qazwsxedcrfv", "asdfghjkl123", "iloveyou1234",
        "abcdefghijkl", "abcd1234abcd", "abc123abc123", "welcome12345", "welcome123456",
        "administrator", "administrator1", "letmein12345", "changeme1234", "changeme12345",
        "trustno1trustno1", "monkey123456", "dragon123456", "football1234", "baseball1234",
        "sunshine1234", "princess1234", "superman1234", "starwars1234", "helloworld12",
        "passw0rd1234", "p@ssw0rd1234", "p@ssword1234", "zaq12wsxcde3", "aaaaaaaaaaaa",
    }
)  # fmt: skip
# Failures from one address across many accounts (password spraying) get a larger allowance
# than failures on one account, because a call center's agents often share one office NAT.
ADDRESS_FAILURE_FACTOR = 4

_hasher = PasswordHasher()
# Verifying against a real hash even for unknown accounts keeps response times the same, so
# the login endpoint does not reveal which email addresses have accounts.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def check_password_policy(password: str, email: str | None = None) -> None:
    """InvalidInput (field "password") unless the password is at least 12 characters, not one
    of the common passwords, and does not contain the local part of the account's email.

    Length over composition rules, as NIST SP 800-63B advises: a long passphrase is strong,
    "Passw0rd!" is not.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    folded = password.casefold()
    if folded in COMMON_PASSWORDS or len(set(folded)) == 1:
        raise InvalidInput("password is too common; choose another", field="password")
    local = (email or "").partition("@")[0].casefold()
    if len(local) >= 3 and local in folded:
        raise InvalidInput("password must not contain your email address", field="password")


def hash_password(password: str) -> str:
    check_password_policy(password)
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
    # `iat` has whole seconds: a token from the same second as the cut-off is void too.
    if user.tokens_valid_after is not None and claims.issued_at <= user.tokens_valid_after:
        raise Unauthorized("token revoked")
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
    totp: str | None = None,
    now: datetime | None = None,
) -> User | Refusal | None:
    """The user for these credentials, or None after recording the failure.

    Returns rather than raises on a wrong password so that the caller commits the failure row:
    the count of recent failures per account and per address is what answers 429, across
    every app process. A user with TOTP on also needs `totp`: without it the answer is
    `TOTP_REQUIRED` (the password was right, nothing is recorded), with a wrong code a
    `Refusal` after recording a failure like a wrong password's.
    """
    now = now or datetime.now(UTC)
    try:
        account = normalize_email(email)
    except InvalidInput:
        account = (email or "").strip().lower()[:320]
    await _throttle(session, account, address, now, max_failures, window_seconds)

    user = await session.scalar(select(User).where(User.email == account))
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password or "")
    if not ok or user is None or not user.is_active:
        session.add(LoginFailure(account=account, address=address[:64], at=now))
        return None
    if user.totp_enabled_at is not None:
        if not totp:
            # The failures stay counted: a right password must not reset the allowance
            # of someone guessing codes.
            return TOTP_REQUIRED
        return _second_factor(session, user, totp, address, now)
    await _logged_in(session, user, now)
    return user


async def _throttle(
    session: AsyncSession,
    account: str,
    address: str,
    now: datetime,
    max_failures: int,
    window_seconds: int,
) -> None:
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


async def _logged_in(session: AsyncSession, user: User, now: datetime) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.account == user.email))
    user.last_login_at = now


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
    check_password_policy(password, address)
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


# -- TOTP (RFC 6238), optional second factor -----------------------------------------------

TOTP_ISSUER = "Support desk"
TOTP_PENDING_SECONDS = 300


@dataclass(frozen=True)
class Refusal:
    """Why a login with a right password still did not succeed (the second factor)."""

    message: str
    code_required: bool = False


TOTP_REQUIRED = Refusal(
    "this account needs a TOTP code: the 6 digits from your authenticator app", True
)
WRONG_TOTP = Refusal("wrong or expired TOTP code")


def totp_uri(secret: str, email: str) -> str:
    """The otpauth:// URI authenticator apps read (from a QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def _totp_counter(secret: str, code: str, now: datetime) -> int | None:
    """The time step `code` belongs to (the current one or a neighbour, for clock drift
    and typing time), or None."""
    code = "".join(code.split())
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for offset in (0, -1, 1):
        if hmac.compare_digest(totp.generate_otp(current + offset), code):
            return current + offset
    return None


def _accept_code(user: User, code: str, now: datetime) -> bool:
    """Check a code and use it up: each code works once (RFC 6238, section 5.2)."""
    if not user.totp_secret:
        return False
    counter = _totp_counter(user.totp_secret, code, now)
    if counter is None or counter <= (user.totp_last_counter or -1):
        return False
    user.totp_last_counter = counter
    return True


def _second_factor(
    session: AsyncSession, user: User, code: str, address: str, now: datetime
) -> User | Refusal:
    if not _accept_code(user, code, now):
        session.add(LoginFailure(account=user.email, address=address[:64], at=now))
        return WRONG_TOTP
    return user


def issue_pending_login(user: User, secret: str, now: datetime | None = None) -> str:
    """A short-lived proof that the password was right, carried by the login form's second
    step. It has no role and no jti, so it is never accepted as an access token."""
    now = now or datetime.now(UTC)
    payload = {
        "sub": str(user.id),
        "purpose": "totp",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=TOTP_PENDING_SECONDS)).timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


async def authenticate_second_factor(
    session: AsyncSession,
    pending: str,
    code: str,
    address: str,
    secret: str,
    *,
    max_failures: int,
    window_seconds: int,
    now: datetime | None = None,
) -> User | Refusal:
    """The login form's second step: the user `pending` speaks for, if `code` is right.
    Throttled and recorded like passwords; an expired step starts the login over."""
    now = now or datetime.now(UTC)
    try:
        payload = jwt.decode(
            pending, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
        if payload.get("purpose") != "totp":
            raise jwt.InvalidTokenError("not a login step")
        user_id = int(payload["sub"])
    except (jwt.InvalidTokenError, TypeError, ValueError) as exc:
        raise Unauthorized("the login step has expired; enter your password again") from exc
    user = await session.get(User, user_id)
    if user is None or not user.is_active or user.totp_enabled_at is None:
        raise Unauthorized("the login step has expired; enter your password again")
    await _throttle(session, user.email, address, now, max_failures, window_seconds)
    result = _second_factor(session, user, code, address, now)
    if isinstance(result, User):
        await _logged_in(session, user, now)
    return result


def start_totp(user: User) -> str:
    """A new secret for `user`, kept unconfirmed until `enable_totp` sees a code from it."""
    if user.totp_enabled_at is not None:
        raise Conflict("TOTP is already on for this account")
    if not user.totp_secret:
        user.totp_secret = pyotp.random_base32()
    return user.totp_secret


async def enable_totp(
    session: AsyncSession, user: User, code: str, now: datetime | None = None
) -> None:
    """Turn TOTP on once the user proves their app has the secret; audited."""
    now = now or datetime.now(UTC)
    if user.totp_enabled_at is not None:
        raise Conflict("TOTP is already on for this account")
    if not _accept_code(user, code, now):
        raise InvalidInput("wrong or expired code; try the next one", field="code")
    user.totp_enabled_at = now
    await audit.record(session, user.id, "totp_enabled", "user", user.id)


async def disable_totp(
    session: AsyncSession, user: User, code: str, now: datetime | None = None
) -> None:
    """Turn TOTP off with a valid code (a stolen session alone cannot); audited."""
    now = now or datetime.now(UTC)
    if user.totp_enabled_at is None:
        raise Conflict("TOTP is not on for this account")
    if not _accept_code(user, code, now):
        raise InvalidInput("wrong or expired code; try the next one", field="code")
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_counter = None
    await audit.record(session, user.id, "totp_disabled", "user", user.id)
