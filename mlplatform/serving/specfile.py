"""The dataset spec file a running serve follows.

A serving process validates requests with the spec it read at start. The embedded profile's run workers read the
file afresh, so after an edit that gave the label a new class, training took the class while /feedback kept refusing
it: labels lost. Edits
that change only what a label may be are taken at the next reload tick; any other edit needs a restart, and
/readyz says so until then (the old spec keeps serving: features are what the loaded model was trained on).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlplatform.domain.spec import DatasetSpec, SpecError, load_spec

log = logging.getLogger(__name__)

# What a label may be, where replay reads, and the threshold the next training gives its model (a served version keeps
# its own): nothing a request or model depends on (positive_class is what the served probability is of: taken live,
# every probability served would have meant the other class).
TAKEN_LIVE = ("classes", "label_map", "source", "decision_threshold")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        seen = path.stat()
    except OSError:
        return None
    return seen.st_mtime_ns, seen.st_ctime_ns, seen.st_size


class SpecFile:
    """The spec serving validates labels with, kept on the file's edits of TAKEN_LIVE fields; `note` says why not otherwise."""

    def __init__(self, path: Path, spec: DatasetSpec) -> None:
        self.path = path
        self.spec = spec
        self.note: str | None = None
        self._stamp = _stamp(path)

    def refresh(self) -> None:
        """Read the file again if it changed since the last look: one stat otherwise."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            edited = load_spec(self.path)
        except (SpecError, OSError) as exc:
            self.note = f"the dataset spec no longer loads ({exc}); serving keeps the spec it has"
            log.error(self.note)
            return
        changed = [name for name in DatasetSpec.model_fields if getattr(edited, name) != getattr(self.spec, name)]
        untaken = [name for name in changed if name not in TAKEN_LIVE]
        if untaken:
            self.note = (f"the dataset spec {self.path} changed ({', '.join(untaken)}); a running serve takes edits of "
                         f"{', '.join(TAKEN_LIVE)} only: restart it to serve with this spec")
            log.warning(self.note)
            return
        self.note = None
        if changed:
            self.spec = edited
            log.info("dataset spec %s: took the edit of %s", self.path, ", ".join(changed))
