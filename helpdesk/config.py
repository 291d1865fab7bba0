"""Settings, read once from the environment (DESIGN.md, "Configuration")."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


def _generated_secret(data_dir: Path, name: str) -> str:
    """Return a secret kept in the data dir, creating it on first use.

    Generated once so that tokens survive restarts without anyone having to configure them.
    """
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
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
    # Service level (issue 8): answered within the threshold, the target, short abandons.
    sl_threshold_seconds: int = 20
    sl_target_percent: int = 80
    short_abandon_seconds: int = 5
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
            sl_threshold_seconds=int(_number(env, "HELPDESK_SL_THRESHOLD_SECONDS", 20)),
            sl_target_percent=min(100, int(_number(env, "HELPDESK_SL_TARGET_PERCENT", 80))),
            short_abandon_seconds=int(_number(env, "HELPDESK_SHORT_ABANDON_SECONDS", 5)),
            chat_router=env.get("HELPDESK_CHAT_ROUTER", "1").lower()
            not in ("0", "false", "no", "off"),
        )

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"
