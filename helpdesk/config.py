"""Settings, read once from the environment (DESIGN.md, "Configuration")."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


def _generated_secret(data_dir: Path, name: str) -> str:
    """Return a secret kept in the data dir, creating it on first use.

    Generated once so that tokens survive restarts without anyone having to configure them.
    Processes starting together race to create it: the secret is written whole to a private
    file and linked into place (which fails if another got there first), so every process
    ends up with the one secret, never a half-written or a second one.
    """
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    tmp = data_dir / f".{name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        tmp.unlink()
    return value


def replace_generated_secret(data_dir: Path, name: str) -> str:
    """Write a new random secret over the one kept in the data dir (rotation) and return it.

    Written to a temporary file and renamed, so a reader never sees half a token.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    tmp = data_dir / f".{name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.replace(tmp, data_dir / name)
    return value


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{name} must be positive, not {raw!r}")
    return value


def _origins(env: dict[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated web origins (`https://shop.example.com`), normalized as browsers send
    them in the Origin header: lower-case scheme and host, default ports dropped, no path."""
    origins = []
    for raw in env.get(name, "").split(","):
        raw = raw.strip().rstrip("/")
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise SystemExit(f"{name}: {raw!r} is not an origin like https://shop.example.com")
        default_port = {"http": 80, "https": 443}[parts.scheme]
        port = f":{parts.port}" if parts.port and parts.port != default_port else ""
        origins.append(f"{parts.scheme}://{parts.hostname}{port}")
    return tuple(origins)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None
    secret_key: str
    search: str = "postgres"
    elasticsearch_url: str | None = None
    default_region: str = "JP"
    timezone: str = "Asia/Tokyo"
    smtp_url: str | None = None
    cti_token: str = ""
    # True when HELPDESK_CTI_TOKEN set it: then only the environment can change it.
    cti_token_from_env: bool = False
    mail_token: str = ""
    support_address: str = "support@localhost"
    support_name: str = "Support"
    token_ttl_seconds: int = 12 * 3600
    max_attachment_bytes: int = 25 * 1024 * 1024
    secure_cookies: bool = False
    login_max_failures: int = 5
    login_window_seconds: int = 300
    # Realtime hub (issue 3): see README, "Realtime".
    presence_grace_seconds: float = 30.0
    ws_heartbeat_seconds: float = 25.0
    ws_queue_size: int = 256
    ws_send_timeout_seconds: float = 10.0
    # Email (issue 5): acknowledge new email cases; how often the outbox worker looks.
    mail_ack: bool = True
    outbox_poll_seconds: float = 1.0
    # Live chat (issue 6): see docs/CHAT.md.
    chat_offer_seconds: float = 20.0
    chat_hours: str = ""
    chat_upload_bytes: int = 5 * 1024 * 1024
    chat_abandon_seconds: float = 120.0
    chat_router: bool = True
    sla_worker: bool = True
    # Scale-out (issue 10): off, `helpdesk serve` leaves the outbox and SLA workers to
    # `helpdesk worker` (docs/DEPLOYMENT.md).
    background: bool = True
    # Service level (issue 8): answered within the threshold, the target, short abandons.
    sl_threshold_seconds: int = 20
    sl_target_percent: int = 80
    short_abandon_seconds: int = 5
    # Security (issue 9): see README, "Security". Sites that may embed the chat widget
    # (empty: any site); the log format ("" = json unless stderr is a terminal).
    widget_origins: tuple[str, ...] = ()
    log_format: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("HELPDESK_DATA_DIR", "./var")).resolve()
        return cls(
            data_dir=data_dir,
            database_url=env.get("HELPDESK_DATABASE_URL") or None,
            secret_key=env.get("HELPDESK_SECRET_KEY") or _generated_secret(data_dir, "secret_key"),
            search=env.get("HELPDESK_SEARCH", "postgres"),
            elasticsearch_url=env.get("HELPDESK_ELASTICSEARCH_URL") or None,
            default_region=env.get("HELPDESK_DEFAULT_REGION", "JP").upper(),
            timezone=env.get("HELPDESK_TIMEZONE", "Asia/Tokyo"),
            smtp_url=env.get("HELPDESK_SMTP_URL") or None,
            cti_token=env.get("HELPDESK_CTI_TOKEN") or _generated_secret(data_dir, "cti_token"),
            cti_token_from_env=bool(env.get("HELPDESK_CTI_TOKEN")),
            mail_token=env.get("HELPDESK_MAIL_TOKEN") or _generated_secret(data_dir, "mail_token"),
            support_address=env.get("HELPDESK_SUPPORT_ADDRESS", "support@localhost"),
            support_name=env.get("HELPDESK_SUPPORT_NAME", "Support"),
            secure_cookies=env.get("HELPDESK_SECURE_COOKIES", "") in ("1", "true", "yes"),
            presence_grace_seconds=_number(env, "HELPDESK_PRESENCE_GRACE_SECONDS", 30.0),
            ws_heartbeat_seconds=_number(env, "HELPDESK_WS_HEARTBEAT_SECONDS", 25.0),
            ws_queue_size=int(_number(env, "HELPDESK_WS_QUEUE_SIZE", 256)),
            ws_send_timeout_seconds=_number(env, "HELPDESK_WS_SEND_TIMEOUT_SECONDS", 10.0),
            mail_ack=env.get("HELPDESK_MAIL_ACK", "1").lower() not in ("0", "false", "no", "off"),
            outbox_poll_seconds=_number(env, "HELPDESK_OUTBOX_POLL_SECONDS", 1.0),
            chat_offer_seconds=_number(env, "HELPDESK_CHAT_OFFER_SECONDS", 20.0),
            chat_hours=env.get("HELPDESK_CHAT_HOURS", "").strip(),
            chat_upload_bytes=int(_number(env, "HELPDESK_CHAT_UPLOAD_BYTES", 5 * 1024 * 1024)),
            chat_abandon_seconds=_number(env, "HELPDESK_CHAT_ABANDON_SECONDS", 120.0),
            sla_worker=env.get("HELPDESK_SLA_WORKER", "1").lower()
            not in ("0", "false", "no", "off"),
            background=env.get("HELPDESK_BACKGROUND", "1").lower()
            not in ("0", "false", "no", "off"),
            sl_threshold_seconds=int(_number(env, "HELPDESK_SL_THRESHOLD_SECONDS", 20)),
            sl_target_percent=min(100, int(_number(env, "HELPDESK_SL_TARGET_PERCENT", 80))),
            short_abandon_seconds=int(_number(env, "HELPDESK_SHORT_ABANDON_SECONDS", 5)),
            chat_router=env.get("HELPDESK_CHAT_ROUTER", "1").lower()
            not in ("0", "false", "no", "off"),
            widget_origins=_origins(env, "HELPDESK_WIDGET_ORIGINS"),
            log_format=env.get("HELPDESK_LOG_FORMAT", "").strip().lower(),
        )

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"
