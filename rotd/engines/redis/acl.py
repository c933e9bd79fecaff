"""Redis ACL users as rotd writes and reads them: password hashes, rules, persistence modes.

Pure functions over what ``ACL GETUSER`` and ``ACL LIST`` answer; nothing here talks to a server.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from rotd.engines import Permission

# What a clone's rules are cleared with before it is given its original's, in the same
# command. Not ``reset``: that sets ``sanitize-payload``, which an original without either
# payload flag does not have, and no rule takes it away again.
CLEARED = ("resetpass", "resetkeys", "resetchannels", "clearselectors", "-@all", "off")

# What a login needs to rotate: read and change users, save them, take the lock key.
NEEDED = (
    "+acl|getuser +acl|setuser +acl|list +acl|save +acl|dryrun +config|get +config|rewrite "
    "+info +get +set +del +pexpire +eval ~rotd:*"
)

# Rules of ``ACL LIST`` that are a user's passwords, not its rights.
_PASSWORD_RULE_PREFIXES = ("#", ">", "<", "!")


def password_hash(password: str) -> str:
    """The SHA-256 hex digest Redis keeps for ``password``."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


class Persistence(StrEnum):
    """How a node keeps its users across a restart, and so how rotd saves an ACL change."""

    ACL_FILE = "aclfile"  # ACL SAVE
    CONFIG_FILE = "config"  # CONFIG REWRITE
    NONE = "none"  # neither: a change would be lost at restart, so none is made

    @property
    def save(self) -> tuple[str, str]:
        """The command that persists an ACL change on a node kept this way."""
        return ("ACL", "SAVE") if self is Persistence.ACL_FILE else ("CONFIG", "REWRITE")


def rules_of(acl_list: list[Any], username: str) -> list[str] | None:
    """``username``'s rules from an ``ACL LIST`` answer, without its passwords; None when the
    user is not listed."""
    for line in acl_list:
        words = str(line).split(" ")
        if len(words) >= 2 and words[0] == "user" and words[1] == username:
            return [r for r in _group_selectors(words[2:]) if not _is_password_rule(r)]
    return None


def pairs(answer: Any) -> dict[str, Any]:
    """A flat ``[key, value, ...]`` answer (or one redis-py already made a dict) as a dict."""
    if isinstance(answer, dict):
        return {str(k): v for k, v in answer.items()}
    items = list(answer or [])
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def unpersisted(address: str) -> Permission:
    return Permission(
        False,
        f"{address} loads its users from neither an ACL file nor a config file, so an "
        "ACL change would be lost when it restarts (a lockout); rotd changes nothing there",
        "start the server with an aclfile (then rotd runs ACL SAVE) or from a config file "
        "(then rotd runs CONFIG REWRITE)",
    )


def _is_password_rule(rule: str) -> bool:
    return rule == "nopass" or rule.startswith(_PASSWORD_RULE_PREFIXES)


def _group_selectors(words: list[str]) -> list[str]:
    """Join the words of each ``(...)`` selector into one rule."""
    rules: list[str] = []
    selector: list[str] | None = None
    for word in words:
        if selector is None and word.startswith("("):
            selector = [word]
        elif selector is not None:
            selector.append(word)
        else:
            rules.append(word)
        if selector is not None and word.endswith(")"):
            rules.append(" ".join(selector))
            selector = None
    return rules
