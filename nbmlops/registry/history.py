"""Alias history: every move of an alias, kept in the registry itself.

Each move is one registered-model tag, ``nbmlops.alias_event.<ns since the epoch>-<random>``,
whose value is a small JSON object (``format`` 1; well under the 5000 characters a tag value
may hold in MLflow's SQL stores). Tags live with the model, so the history is shared by everyone
using one tracking server; the zero-padded nanoseconds sort the keys in time order and the random
suffix keeps two machines from writing one key. Writers on one machine hold
:func:`~nbmlops.registry.registry.alias_lock` while they move an alias and record it, so their
events never interleave.

Reasons: ``promote`` (``nbmlops models promote``, :func:`nbmlops.promote`), ``rollback``,
``job`` (a retraining job's ``candidate`` alias and its ``--promote``), ``progressive`` (a
progressive canary promoted by its analysis), ``archive`` (an archived version loses its
aliases: ``to`` is None) and ``package`` (``%%mlops_package --alias``).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from nbmlops.errors import RegistryError, UsageError

if TYPE_CHECKING:
    from nbmlops.config import Settings
    from nbmlops.registry.registry import Registry

PREFIX = "nbmlops.alias_event."
FORMAT = 1
REASONS = ("promote", "rollback", "job", "progressive", "archive", "package")
_DETAIL_MAX = 500


@dataclass(frozen=True)
class AliasEvent:
    """One move of one alias: ``from_version`` is None for a new alias, ``to_version`` None for
    a removed one; ``time`` is ISO 8601 UTC with microseconds."""

    time: str
    alias: str
    from_version: str | None
    to_version: str | None
    user: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "time": self.time,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "user": self.user,
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AliasEvent:
        return cls(
            time=data["time"],
            alias=data["alias"],
            from_version=data.get("from"),
            to_version=data.get("to"),
            user=data.get("user", "unknown"),
            reason=data["reason"],
            detail=data.get("detail", ""),
        )

    @property
    def move(self) -> str:
        """``v3 -> v4``, ``- -> v4`` for a new alias, ``v4 -> -`` for a removed one."""
        source = f"v{self.from_version}" if self.from_version else "-"
        target = f"v{self.to_version}" if self.to_version else "-"
        return f"{source} -> {target}"


def current_user() -> str:
    """Who moves the alias: the tracking server's user (``MLFLOW_TRACKING_USERNAME``) when set,
    else the login name, else ``unknown``."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container's uid without a passwd entry)
        return "unknown"


def validate_reason(reason: str) -> str:
    if reason not in REASONS:
        raise UsageError(f"alias-move reason {reason!r} is not one of {', '.join(REASONS)}")
    return reason


def record(
    registry: Registry,
    name: str,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    reason: str,
    detail: str = "",
) -> AliasEvent | None:
    """Write one move of ``name@alias`` to the registry (None, and nothing written, when the
    alias stays where it was); the caller holds the alias lock."""
    validate_reason(reason)
    if from_version == to_version:
        return None
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    event = AliasEvent(
        time=f"{stamp}.{ns // 1000 % 1_000_000:06d}Z",
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        user=current_user(),
        reason=reason,
        detail=detail[:_DETAIL_MAX],
    )
    key = f"{PREFIX}{ns:020d}-{secrets.token_hex(3)}"
    with registry._answering(f"record the move of {name}@{alias}"):
        registry.client.set_registered_model_tag(name, key, json.dumps(event.to_dict()))
    return event


def history(
    name: str,
    alias: str | None = None,
    registry: Registry | None = None,
    settings: Settings | None = None,
) -> list[AliasEvent]:
    """The recorded moves of ``name``'s aliases (only ``alias``'s when given), oldest first:
    when, from and to which version, by whom and why (``nbmlops.history("churn")``)."""
    from mlflow.exceptions import MlflowException

    from nbmlops.errors import ModelNotFoundError
    from nbmlops.registry.refs import validate_name
    from nbmlops.registry.registry import _ABSENT, Registry

    validate_name(name)
    registry = registry or Registry(settings)
    try:
        tags = registry.client.get_registered_model(name).tags or {}
    except MlflowException as exc:
        if exc.error_code not in _ABSENT:
            raise registry._failed(f"read the alias history of {name}", exc) from None
        raise ModelNotFoundError(registry._known_versions(name)) from None
    events = []
    for key in sorted(k for k in tags if k.startswith(PREFIX)):
        try:
            event = AliasEvent.from_dict(json.loads(tags[key]))
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"the alias-history tag {key!r} of {name} is not an nbmlops event ({exc!r}: "
                f"{tags[key][:100]!r}); delete that tag from the registered model and retry"
            ) from None
        if alias is None or event.alias == alias:
            events.append(event)
    return events


def held(events: list[AliasEvent], alias: str, start: datetime | None, end: datetime) -> list[dict]:
    """The versions ``alias`` pointed at over ``start`` .. ``end`` (from the beginning of the
    history when ``start`` is None), oldest first, as ``{"version", "from", "until"}`` with
    ISO times clipped to the window; ``until`` is None for the version holding it at ``end``."""
    spans: list[dict] = []
    holder, since = None, None
    for event in events:
        moment = _moment(event.time)
        if event.alias != alias or moment > end:
            continue
        if holder is not None and (start is None or moment > start):
            spans.append(_span(holder, since, moment, start))
        holder, since = event.to_version, moment
    if holder is not None:
        spans.append(_span(holder, since, None, start))
    return spans


def _span(version: str, since: datetime, until: datetime | None, start: datetime | None):
    begin = max(since, start) if start is not None else since
    return {
        "version": version,
        "from": begin.isoformat(timespec="seconds"),
        "until": until.isoformat(timespec="seconds") if until else None,
    }


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
