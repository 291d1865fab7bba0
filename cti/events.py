"""The normalized call event every PBX adapter produces (DESIGN.md, "Normalized call event").

Adapters (HTTP, Zammad Generic CTI, Asterisk AMI, the simulator) turn whatever their PBX
says into `CallEvent`s and hand them to the helpdesk's call service; nothing downstream
knows which PBX spoke.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENTS = ("ring", "answer", "hangup")
DIRECTIONS = ("in", "out")
# Zammad's Generic CTI causes, plus what Asterisk adapters map to.
CAUSES = (
    "normalClearing",
    "busy",
    "cancel",
    "noAnswer",
    "congestion",
    "notFound",
    "forwarded",
)
MAX_AGENTS = 50


class InvalidCallEvent(ValueError):
    """A call event that cannot be understood; `field` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class CallEvent:
    """One thing that happened to one call.

    `agents` are extensions or agent emails: a ring may list several (a queue ringing a
    group), an answer names the one who answered, a hangup may name none. `call_id` is the
    PBX's id for the whole call (Asterisk: Linkedid), so a transfer stays one call.
    """

    event: str
    call_id: str
    direction: str = "in"
    from_number: str = ""
    to_number: str = ""
    agents: tuple[str, ...] = ()
    cause: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    queue: str | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise InvalidCallEvent(f"event must be one of {', '.join(EVENTS)}", "event")
        if not self.call_id or len(self.call_id) > 200:
            raise InvalidCallEvent("call_id is required (at most 200 characters)", "call_id")
        if self.direction not in DIRECTIONS:
            raise InvalidCallEvent("direction must be in or out", "direction")
        if len(self.agents) > MAX_AGENTS:
            raise InvalidCallEvent(f"at most {MAX_AGENTS} agents", "agent")
        if self.at.tzinfo is None:
            raise InvalidCallEvent("at must carry a timezone (e.g. 2026-11-22T09:00:00Z)", "at")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallEvent:
        """Parse the JSON shape of DESIGN.md; raises InvalidCallEvent with the field."""
        if not isinstance(data, dict):
            raise InvalidCallEvent("a call event is a JSON object")
        unknown = set(data) - {
            "event",
            "call_id",
            "direction",
            "from",
            "to",
            "agent",
            "cause",
            "at",
            "queue",
        }
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidCallEvent(f"unknown field {name!r}", name)
        agent = data.get("agent")
        if agent is None:
            agents: tuple[str, ...] = ()
        elif isinstance(agent, str):
            agents = (agent,) if agent else ()
        elif isinstance(agent, list) and all(isinstance(a, str) for a in agent):
            agents = tuple(a for a in agent if a)
        else:
            raise InvalidCallEvent("agent must be text or a list of text", "agent")
        for name in ("event", "call_id", "direction", "from", "to", "cause", "at", "queue"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidCallEvent(f"{name} must be text", name)
        at = datetime.now(UTC)
        if data.get("at"):
            try:
                at = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
            except ValueError:
                raise InvalidCallEvent("at must be an ISO 8601 time", "at") from None
        if not data.get("event"):
            raise InvalidCallEvent("event is required", "event")
        return cls(
            event=str(data["event"]),
            call_id=str(data.get("call_id") or ""),
            direction=str(data.get("direction") or "in"),
            from_number=str(data.get("from") or ""),
            to_number=str(data.get("to") or ""),
            agents=agents,
            cause=data.get("cause") or None,
            at=at,
            queue=data.get("queue") or None,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "call_id": self.call_id,
            "direction": self.direction,
            "from": self.from_number,
            "to": self.to_number,
            "agent": list(self.agents),
            "cause": self.cause,
            "at": self.at.isoformat(),
            "queue": self.queue,
        }


# Where adapters deliver events: the CLI binds it to the call service, tests to a list.
EventSink = Callable[[CallEvent], Awaitable[None]]
