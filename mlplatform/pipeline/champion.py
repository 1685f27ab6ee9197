"""Rollback, pinning and the champion timeline: moves of `@champion` made by a person, through the CLI or a Dagster job."""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.stores.registry import ChampionChange, Registry


class ChampionError(ValueError):
    """A champion change that cannot be made (unknown version, no reason given); nothing was moved."""


@dataclass(frozen=True)
class ChampionRequest:
    """Set `version` as champion (pinned or not), or only unpin when `version` is None."""

    reason: str
    version: int | None = None
    pin: bool = False


def change_champion(registry: Registry, request: ChampionRequest, by: str) -> ChampionChange | None:
    """Apply a person's champion change and return the timeline entry it recorded (None when unpinning without a champion)."""
    if not request.reason.strip():
        raise ChampionError("say why (--reason): the timeline records who moved the champion, when and why")
    if request.version is None:
        if request.pin:
            raise ChampionError("pinning needs a version")
        return registry.unpin(request.reason, by)
    known = {v.version for v in registry.versions()}
    if request.version not in known:
        raise ChampionError(f"{registry.name} has no version {request.version} (versions: {', '.join(map(str, sorted(known))) or 'none'})")
    return registry.set_champion(request.version, request.reason, by, pin=request.pin)
