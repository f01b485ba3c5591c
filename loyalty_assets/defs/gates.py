"""Gates computed inside an asset: report every check, and write nothing when one fails."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import dagster as dg


def check_result(asset: str, check: str, problems: list[str], metadata: dict | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=check,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or "passed",
        metadata=metadata or {},
    )


def gated_outputs(
    outputs: Iterable[dg.Output],
    checks: list[dg.AssetCheckResult],
    what: str,
    rejected: Iterable[dg.Output] = (),
    note: str = "",
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Yield the outputs and check results, or, if a check failed, only ``rejected`` outputs and the
    check results before failing the step (its message ends with ``note``): the previous version of
    the gated assets stays intact."""
    failed = [check for check in checks if not check.passed]
    if failed:
        yield from rejected
        yield from checks
        raise dg.Failure(
            description=f"{what} rejected: "
            + "; ".join(
                f"{check.asset_key.to_user_string()}.{check.check_name}: {check.description}" for check in failed
            )
            + (f"; {note}" if note else "")
        )
    yield from outputs
    yield from rejected
    yield from checks
