"""Asset checks that are not computed inside their asset."""

import dagster as dg

from mlplatform.domain.keys import DUPLICATES, INGESTED, LABELS_APPLIED, QUARANTINED, REJECTED_FILES, ROWS_READ
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import RAW_EVENTS, ModelNames
from mlplatform.orchestration.resources import PlatformResource

RECENT_EVENTS = 5000


def build_checks(names: ModelNames) -> list[dg.AssetChecksDefinition]:
    model_name = names.model

    @dg.asset_check(asset=names.asset(RAW_EVENTS), name="raw_events_quality",
                    description="Schema of the event log matches the spec; quarantine share and null share stay below their limits.")
    def raw_events_quality(context: dg.AssetCheckExecutionContext, platform: PlatformResource) -> dg.AssetCheckResult:
        model = platform.for_step(model_name)
        settings, spec = model.settings, model.spec
        meta = latest_metadata(context.instance, names.asset(RAW_EVENTS)) or {}
        # Of the rows read: a label file's applied labels were left out (1000 labels, 20 for unknown events, read as 100%
        # quarantined), and a resent event's applied label is a duplicate too, so no sum of the outcomes is the rows (the reviews).
        seen = int(str(meta.get(ROWS_READ, 0))) or sum(int(str(meta.get(key, 0))) for key in (INGESTED, DUPLICATES, QUARANTINED, LABELS_APPLIED))
        quarantine_share = int(str(meta.get(QUARANTINED, 0))) / seen if seen else 0.0
        recent = model.event_log.events_between(limit=RECENT_EVENTS)
        null_share = {name: round(float(recent[name].isna().mean()), 4) for name in spec.features} if len(recent) else {}
        too_null = {k: v for k, v in null_share.items() if v > settings.max_null_share}
        problems = []
        if quarantine_share > settings.max_quarantine_share:
            problems.append(f"{quarantine_share:.1%} of the last ingestion was quarantined (limit {settings.max_quarantine_share:.0%})")
        if int(str(meta.get(REJECTED_FILES, 0))):
            problems.append(f"{meta[REJECTED_FILES]} file(s) rejected: see landing/rejected")
        if too_null:
            problems.append(f"features mostly missing in the last {len(recent)} events: {too_null}")
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(problems) or "schema, quarantine share and null share within limits",
            metadata={
                "quarantine_share": quarantine_share,
                REJECTED_FILES: int(str(meta.get(REJECTED_FILES, 0))),
                "max_null_share": max(null_share.values(), default=0.0),
                "null_share": dg.MetadataValue.json(null_share),
            },
        )

    return [raw_events_quality]
