"""Rollback: move `champion` back to the previous champion (or a named version), audited with who
and why. Scoring, serving and monitoring resolve the alias, so they follow at once."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor import audit, registry
from conveyor.errors import RegistryError
from tasks.lineage import DECISION
from tasks.registry import PREVIOUS

# Decisions of a version that passed its gates and, where the risk tier asks, its sign-off
# (a pending, rejected or timed-out version did not: making it champion needs --force).
PASSED = ("promoted", "kept")


class RollbackRefused(RegistryError):
    """A rollback the registry's state does not allow: nothing was changed."""


@dataclass(frozen=True)
class RolledBack:
    model: str
    previous: str
    champion: str
    message: str


def previous_champion(name: str, current: str) -> str | None:
    """The champion before `current`, from the audit trail (newest decision first)."""
    seen_current = False
    for entry in registry.audit_trail(name, limit=1000):
        after = str(entry.get("champion_after") or "")
        if not after:
            continue
        if after == current:
            seen_current = True
        elif seen_current:
            return after
    tag = registry.get_version(name, current).tags.get(PREVIOUS)
    return tag or None


def passed_gates(tags: dict[str, str]) -> bool:
    return tags.get(DECISION) in PASSED


def rollback(name: str, actor: str, reason: str, to: str | None = None, force: bool = False) -> RolledBack:
    """Point `champion` at `to` (default: the previous champion) under the promotion lock, audited."""
    registry.model_name(name)
    if not actor.strip() or not reason.strip():
        raise RollbackRefused("a rollback needs who (--as) and why (--reason)")
    with registry.promotion_lock(registry.lock_subject(name)):  # a segment model: its spec's lock
        champion = registry.alias_version(name, registry.CHAMPION)
        current = None if champion is None else str(champion.version)
        if to is None:
            if current is None:
                raise RollbackRefused(f"{name} has no champion to roll back from")
            to = previous_champion(name, current)
            if to is None:
                raise RollbackRefused(f"{name} v{current} has no previous champion; name one with --to VERSION")
        target = registry.get_version(name, to)
        if str(target.version) == current:
            raise RollbackRefused(f"{name} v{to} is already the champion")
        passed = passed_gates(target.tags)
        if not passed and not force:
            raise RollbackRefused(
                f"{name} v{to} never passed its gates and sign-off (decision: {target.tags.get(DECISION, 'none')}: "
                f"{target.tags.get('conveyor.decision_reason', '')[:200]}); add --force to make it champion anyway"
            )
        forced = "" if passed else " (forced: this version never passed its gates)"
        registry.set_alias(name, registry.CHAMPION, str(to))
        registry.record_audit(
            name,
            {
                "version": str(to),
                "outcome": audit.ROLLED_BACK,
                "reason": f"{reason}{forced}",
                "actor": actor,
                "previous_champion": current or "",
                "champion_after": str(to),
                "forced": str(not passed).lower(),
            },
        )
        registry.set_version_tags(name, str(to), {"conveyor.rolled_back_from": current or ""})
    audit.publish_mlflow_table(name, audit.history(name))
    message = f"{name}: champion v{current or 'none'} -> v{to} (rolled back by {actor}: {reason}){forced}"
    return RolledBack(name, current or "", str(to), message)
