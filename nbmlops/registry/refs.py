"""Addresses of registered versions: ``NAME`` (its ``production`` alias if set, else its latest
live version), ``NAME@ALIAS``, ``NAME@v3``, ``models:/NAME/3`` and ``models:/NAME@ALIAS``."""

from __future__ import annotations

import re

from nbmlops.errors import UsageError

PRODUCTION = "production"
PREVIOUS = "previous"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_VERSION_ALIAS = re.compile(r"^v(\d+)$")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"model name {name!r} is not valid: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (e.g. churn or churn-v2)"
        )
    return name


def validate_alias(alias: str) -> str:
    if not _ALIAS.match(alias or "") or _VERSION_ALIAS.match(alias) or alias == "latest":
        raise UsageError(
            f"alias {alias!r} is not valid: use letters, digits, '_' and '-', starting with a "
            "letter; 'latest' and 'v<number>' are reserved (e.g. staging, production)"
        )
    return alias


def followed_alias(model: str, aliases: tuple[str, ...]) -> str | None:
    """The alias a server or stream consumer on ``model`` follows: the one it names
    (``NAME@ALIAS``), or ``production`` for a bare ``NAME`` that resolved through it (the
    version it resolved to has ``aliases``); None for a pinned version."""
    _, pinned, alias = parse_ref(model)
    if alias is not None:
        return alias
    if pinned is None and PRODUCTION in aliases:
        return PRODUCTION
    return None


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split an address into ``(name, version, alias)``; at most one of the last two is set."""
    if not isinstance(ref, str) or not ref.strip():
        raise UsageError("a model address is required, e.g. churn, churn@production or churn@v3")
    ref = ref.strip()
    if ref.startswith("models:/"):
        body = ref[len("models:/") :]
        if "@" in body:
            name, alias = body.split("@", 1)
            return validate_name(name), None, alias
        name, _, version = body.partition("/")
        if not version.isdigit():
            raise UsageError(
                f"{ref!r} is not a model URI; use models:/NAME/3 or models:/NAME@ALIAS"
            )
        return validate_name(name), version, None
    name, _, alias = ref.partition("@")
    validate_name(name)
    if not alias:
        return name, None, None
    if match := _VERSION_ALIAS.match(alias):
        return name, match.group(1), None
    return name, None, alias


def previous_alias(alias: str) -> str:
    """The alias that remembers where ``alias`` pointed before it last moved."""
    return PREVIOUS if alias == PRODUCTION else f"{PREVIOUS}-{alias}"
