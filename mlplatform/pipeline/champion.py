"""Rollback, pinning and the champion timeline: moves of `@champion` made by a person, through the CLI or a Dagster job."""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.domain.keys import DECISION, DECISION_REASON, REJECTED
from mlplatform.domain.predictor import spec_mismatch
from mlplatform.domain.spec import DatasetSpec
from mlplatform.stores.registry import ChampionChange, ChampionRecord, Registry


class ChampionError(ValueError):
    """A champion change that cannot be made (unknown version, no reason given, a version that cannot be loaded or that the
    spec no longer fits); nothing was moved."""


class NothingToChange(ChampionError):
    """The champion already is what was asked (that version, pinned or not as asked; no pin to remove): nothing is moved
    and nothing recorded, so a repeated command leaves no false move in the timeline."""


@dataclass(frozen=True)
class ChampionRequest:
    """Set `version` as champion (pinned or not), or only unpin when `version` is None."""

    reason: str
    version: int | None = None
    pin: bool = False


def change_champion(registry: Registry, spec: DatasetSpec, request: ChampionRequest, by: str) -> ChampionChange:
    """Apply a person's champion change and return the timeline entry it recorded; NothingToChange when it asks for what is.
    A version that does not fit `spec` (the model's spec as it is now) is refused: serving could not load it, and the
    alias would name a model nothing serves, pinned where a pin was asked."""
    if not request.reason.strip():
        raise ChampionError("say why (--reason): the timeline records who moved the champion, when and why")
    current = registry.champion_record()
    if request.version is None:
        if request.pin:
            raise ChampionError("pinning needs a version")
        if current is None or not current.pinned:
            raise NothingToChange(f"nothing to unpin: {'there is no champion' if current is None else f'v{current.version} is not pinned'}")
        change = registry.unpin(request.reason, by)
        if change is None:  # the alias went away meanwhile
            raise NothingToChange("nothing to unpin: there is no champion")
        return change
    known = {v.version for v in registry.versions()}
    if request.version not in known:
        raise ChampionError(f"{registry.name} has no version {request.version} (versions: {', '.join(map(str, sorted(known))) or 'none'})")
    if current is not None and current.recorded and (current.version, current.pinned) == (request.version, request.pin):
        raise NothingToChange(f"v{current.version} already is the champion{', pinned' if current.pinned else ''}: nothing moved")
    try:
        predictor = registry.load_predictor(request.version)
    except Exception as exc:  # whatever MLflow or unpickling raises: the alias must not name a model nothing can load
        raise ChampionError(f"v{request.version} cannot be loaded ({type(exc).__name__}: {exc}); serving could not load it either. "
                            "Pick another version, or restore its artifacts in the MLflow store") from exc
    misfit = spec_mismatch(predictor, spec)
    if misfit:
        raise ChampionError(f"v{request.version} does not fit dataset spec {spec.name!r} as it is now: {misfit}; serving could not load it. "
                            "Restore the spec it was trained on first, or pick a version trained on this one")
    return registry.set_champion(request.version, request.reason, by, pin=request.pin)


def own_verdict(registry: Registry, version: int) -> str | None:
    """What the version's own evaluation decided, where it rejected it: a person may make it champion, knowingly (a
    version that had missed its quality floor was moved to with no word of it: the new-user probe)."""
    tags = registry.get_version(version).tags
    if tags.get(DECISION) != REJECTED:
        return None
    return f"v{version}'s own evaluation rejected it: {tags.get(DECISION_REASON, 'no reason recorded')}"


def change_said(before: ChampionRecord | ChampionChange | None, change: ChampionChange) -> str:
    """What a person's change did, in a sentence: `set --no-pin` of the pinned champion unpinned it, and the line showing
    the champion afterwards said only that it was no longer pinned, not that this command had unpinned it."""
    pin = ("pinned: the retraining loop leaves it in place until `champion unpin`" if change.pinned
           else "not pinned: the retraining loop may replace it")
    if before is not None and before.version == change.version:
        if not change.pinned and before.pinned:
            return f"v{change.version} unpinned: the retraining loop may replace it"
        return f"v{change.version} {'already the champion, now pinned' if change.pinned else 'recorded as the champion'}; {pin}"
    ended = f" (the pin of v{before.version} ends)" if before is not None and before.pinned else ""
    return f"{f'v{before.version}' if before is not None else 'no champion'} → v{change.version}{ended}; {pin}"
