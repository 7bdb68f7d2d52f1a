"""metav1.Condition bookkeeping: lastTransitionTime moves only when a condition's status does."""

from __future__ import annotations

from .api import Condition, RLHFJobStatus

# Ready, Reconciling and Stalled as kstatus reads them; then the phase's own.
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "Running", "Suspended", "Succeeded", "Failed")


def set_condition(
    status: RLHFJobStatus, type_: str, true: bool, reason: str, message: str, now: str, generation: int
) -> None:
    value = "True" if true else "False"
    old = next((c for c in status.conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(type=type_, status=value, reason=reason, message=message[:32768],
                    last_transition_time=since, observed_generation=generation)
    others = [c for c in status.conditions if c.type != type_]
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    status.conditions = sorted([*others, new], key=lambda c: order.get(c.type, len(order)))


def condition(status: RLHFJobStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)
