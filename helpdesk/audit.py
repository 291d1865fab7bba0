"""The audit trail: who did what to which record, and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.models import AuditRecord


async def record(
    session: AsyncSession,
    actor_user_id: int | None,
    action: str,
    entity_type: str,
    entity_id: int,
    **details: Any,
) -> AuditRecord:
    """Write an audit record in the caller's transaction, so it exists exactly when the act does."""
    entry = AuditRecord(
        actor_user_id=actor_user_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        details=details,
    )
    session.add(entry)
    await session.flush()
    return entry
