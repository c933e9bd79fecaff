"""``rotd iam-policy`` for an inventory that reaches secrets through IAM roles.

Each identity rotd acts as needs its own policy: every role gets the policy for the secrets,
masters and KMS keys of the databases that use it (built by :mod:`rotd.iampolicy`, once per
account and region, and merged), and rotd's own (base) identity gets ``sts:AssumeRole`` on
every role, with the policy for the secrets it reaches itself, if any. Each bridge function's
role gets one policy too, for the bridged secrets of every identity. :func:`trust_policy` is
what each role must trust: the base identity.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from rotd.iampolicy import BASE, VERSION, Policy, build_policy
from rotd.inventory import AwsAccess, Inventory


@dataclass(frozen=True)
class Policies:
    """One policy per identity: ``base``, each role ARN, then each bridge function's role
    (``bridge-function:<ARN>``), in that order."""

    documents: dict[str, dict[str, Any]]
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        return json.dumps(self.documents, indent=2)


def uses_roles(inventory: Inventory) -> bool:
    return any(a.role_arn is not None for a in inventory.accesses)


async def build_policies(inventory: Inventory, *, offline: bool = False) -> Policies:
    """The policy of each identity of ``inventory``; see the module's description."""
    by_identity: dict[str, list[Policy]] = {}
    warnings: list[str] = []
    for access in inventory.accesses:
        label = access.role_arn or BASE
        policy = await build_policy(_part(inventory, access), offline=offline)
        by_identity.setdefault(label, []).append(policy)
        warnings += [f"{access.label}: {w}" for w in policy.warnings]
    roles = sorted(label for label in by_identity if label != BASE)
    documents: dict[str, dict[str, Any]] = {}
    base = merge(p.document for p in by_identity.get(BASE, ()))
    base["Statement"].append(
        {
            "Sid": "AssumeRotationRoles",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": roles,
        }
    )
    documents[BASE] = base
    for role in roles:
        documents[role] = merge(p.document for p in by_identity[role])
    policies = [p for identity in by_identity.values() for p in identity]
    functions = sorted({label for p in policies for label in p.functions})
    for label in functions:
        documents[label] = merge(p.functions[label] for p in policies if label in p.functions)
    notes = tuple(dict.fromkeys(n for p in policies for n in p.notes))
    return Policies(documents, tuple(dict.fromkeys(warnings)), notes)


def trust_policy(base_identity_arn: str) -> dict[str, Any]:
    """What a role rotd assumes must trust: the identity rotd runs as."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": base_identity_arn},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _part(inventory: Inventory, access: AwsAccess) -> Inventory:
    """The inventory's secrets reached through ``access``, as if it were the top-level one."""
    secrets = tuple(s for s in inventory.secrets if s.aws == access)
    return replace(inventory, **access.fields(), secrets=secrets)


def merge(documents: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One document with the statements of ``documents``: those with the same Sid become one,
    their resources (and KMS ViaService conditions) joined, sorted."""
    merged: dict[str, dict[str, Any]] = {}
    for document in documents:
        for statement in document["Statement"]:
            sid = statement["Sid"]
            if sid not in merged:
                merged[sid] = json.loads(json.dumps(statement))
                continue
            into = merged[sid]
            into["Resource"] = sorted(set(into["Resource"]) | set(statement["Resource"]))
            if "Condition" in statement and statement["Condition"] != into.get("Condition"):
                into["Condition"] = _join_conditions(into["Condition"], statement["Condition"])
    return {"Version": VERSION, "Statement": list(merged.values())}


def _join_conditions(one: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    services: set[str] = set()
    for condition in (one, other):
        for values in condition.values():
            via = values["kms:ViaService"]
            services |= {via} if isinstance(via, str) else set(via)
    ordered = sorted(services)
    operator = "StringLike" if any("*" in s for s in ordered) else "StringEquals"
    return {operator: {"kms:ViaService": ordered[0] if len(ordered) == 1 else ordered}}
