"""The fields a run's config may not change: where a resource connects, who it says it is, and
which settings files it reads.

Dagster's launchpad has no login, and Dagster resolves ``{env: NAME}`` in any string field of a
run config, so a run config that could name the Elasticsearch URL and password could send any
variable of the code location (the Keepa key) to any host; one that could name the rules file
could switch the rules off. Those fields have one source, the environment: when Dagster sets a
resource up for a run or a sensor, each of them must equal what the environment gives, or the
run fails before it connects anywhere. Tuning fields (timeouts, retries) stay run config.

The refusal names the fields and their variables, never a value (a value may be a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg


class RunConfigRefusedError(ValueError):
    """A run config gave a resource a connection, credential or settings-file value."""


def resolved(value: Any) -> Any:
    """A field's value: an ``EnvVar`` read now (outside a run Dagster has not resolved it)."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


def refuse_changed_fields(
    resource: str,
    configured: dg.ConfigurableResource,
    from_environment: dg.ConfigurableResource,
    fields: Mapping[str, str],
) -> None:
    """Fail unless every field in ``fields`` (field -> its variable) of ``configured`` equals
    the same field of the resource the environment builds."""
    changed = [
        name
        for name in fields
        if resolved(getattr(configured, name)) != resolved(getattr(from_environment, name))
    ]
    if not changed:
        return
    named = ", ".join(f"{name} (env {fields[name]})" for name in changed)
    raise RunConfigRefusedError(
        f"the {resource} resource's {named} cannot be changed in run config: connections, "
        "credentials and settings files come from the code location's environment only. Remove "
        f"the {resource} resource from the run config, or copy its values from the launchpad's "
        "scaffold unchanged (a run config that names one field of a resource resets the others "
        "to their defaults)"
    )
