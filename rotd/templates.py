"""Templates over a secret's keys: Jinja2, sandboxed, checked offline, rendered per version.

One environment serves every feature that writes text from a secret (derived keys, rendered
files): Jinja2's sandbox, autoescape off, and strict about undefined names, so that a typo
fails loudly instead of writing an empty string. :func:`problems` checks a template without
rendering it (syntax, unknown filters and tests, names no secret of its engine has, includes)
and places each problem at a line and column of the template, for ``validate`` to turn into
``FILE:LINE:COL``. :func:`render` and :func:`render_keys` fill a template from one secret
version's own keys. A template's output holds the password: every output is registered with
the redactor before it is returned, and no error quotes a value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rotd.engines import SECRET_KEYS
from rotd.engines.registry import installed
from rotd.errors import EngineError
from rotd.observability import redactor


def urlencode(value: Any) -> str:
    """Percent-encode everything but letters, digits and ``-._~``: safe in a URL's user,
    password, path or query. Jinja2's own ``urlencode`` keeps ``/``, which would end a URL's
    authority inside a password."""
    if isinstance(value, Mapping):
        return "&".join(f"{urlencode(k)}={urlencode(v)}" for k, v in value.items())
    return quote(str(value), safe="")


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        autoescape=False,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    environment.filters["urlencode"] = urlencode
    return environment


ENVIRONMENT = _environment()
# Filters a derived key usually needs, named when an unknown filter is reported.
COMMON_FILTERS = ("urlencode", "default", "lower", "upper", "replace", "trim")


@dataclass(frozen=True)
class TemplateProblem:
    """One problem in a template, at a 1-based line and column of the template's own text."""

    line: int
    column: int
    reason: str


class RenderError(ValueError):
    """A template could not be rendered from a secret's keys. The message holds no value.

    ``what``: the template, as the operator knows it (``derived key 'url'``)."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


def secret_names(engine: str | None) -> frozenset[str] | None:
    """The keys a secret of ``engine`` may hold, which its templates may name; None: any.

    ``engine`` None (the inventory leaves it to the secret): the keys of any installed engine.
    """
    registry = installed()
    if engine is not None:
        try:
            return registry[engine].info.secret_keys
        except EngineError:
            return None  # an unknown engine is reported on its own
    known: set[str] = set(SECRET_KEYS)
    for name in registry.names():
        try:
            keys = registry[name].info.secret_keys
        except EngineError:
            continue
        if keys is not None:
            known |= keys
    return frozenset(known)


def problems(
    source: str, names: frozenset[str] | None = None, *, engine: str = ""
) -> list[TemplateProblem]:
    """Everything wrong with ``source`` that can be known without a secret, in order.

    ``names``: the keys a secret may hold (:func:`secret_names`); a name outside them is a
    problem, said to be unknown to ``engine``'s secrets. None accepts any name.
    """
    lines = source.splitlines() or [""]
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        line = min(max(exc.lineno, 1), len(lines))
        return [TemplateProblem(line, 1, f"template syntax error: {exc.message}")]
    found: list[TemplateProblem] = []

    def at(lineno: int, pattern: str) -> int:
        text = lines[min(max(lineno, 1), len(lines)) - 1]
        match = re.search(pattern, text)
        return match.start(1) + 1 if match else 1

    for other in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        found.append(
            TemplateProblem(other.lineno, 1, "a template cannot include or import other templates")
        )
    for node in tree.find_all(nodes.Filter):
        if node.name not in ENVIRONMENT.filters:
            column = at(node.lineno, rf"\|\s*({re.escape(node.name)})\b")
            reason = f"unknown filter {node.name!r}; e.g. {', '.join(COMMON_FILTERS)}"
            found.append(TemplateProblem(node.lineno, column, reason))
    for test in tree.find_all(nodes.Test):
        if test.name not in ENVIRONMENT.tests:
            column = at(test.lineno, rf"\bis\s+(?:not\s+)?({re.escape(test.name)})\b")
            found.append(TemplateProblem(test.lineno, column, f"unknown test {test.name!r}"))
    if names is not None:
        try:
            undeclared = meta.find_undeclared_variables(tree)
        except TemplateSyntaxError:  # an unknown filter, reported above: read names plainly
            stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx != "load"}
            undeclared = {n.name for n in tree.find_all(nodes.Name)} - stored
        seen: set[str] = set()
        for name in tree.find_all(nodes.Name):
            if name.ctx != "load" or name.name not in undeclared or name.name in names:
                continue
            if name.name in seen:
                continue
            seen.add(name.name)
            column = at(name.lineno, rf"(?<![\w.])({re.escape(name.name)})\b")
            whose = f"a {engine} secret" if engine else "a secret"
            known = ", ".join(sorted(names))
            reason = f"{name.name!r} is not a key {whose} has; known keys: {known}"
            found.append(TemplateProblem(name.lineno, column, reason))
    return sorted(found, key=lambda p: (p.line, p.column))


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> tuple[Template, frozenset[str]]:
    tree = ENVIRONMENT.parse(source)
    return ENVIRONMENT.from_string(tree), frozenset(meta.find_undeclared_variables(tree))


def render(source: str, keys: Mapping[str, Any], *, what: str = "template") -> str:
    """``source`` filled from a secret's ``keys``; raise :class:`RenderError` naming what is
    missing or wrong, never a value. An output made with the password is registered with the
    redactor (one without it, ``{{ host }}:{{ port }}``, is no secret)."""
    try:
        template, needed = _compiled(source)
    except TemplateSyntaxError as exc:
        raise RenderError(what, f"template syntax error: {exc.message}") from None
    try:
        output = template.render({k: v for k, v in keys.items() if v is not None})
    except UndefinedError as exc:  # its message names the name, never a value
        undefined = redactor.scrub(exc.message or "a name is undefined")
        raise RenderError(
            what,
            f"the template names a key this secret does not hold ({undefined}); add the key to the "
            "secret, or give it a default in the template ({{ dbname | default('') }})",
        ) from None
    except Exception as exc:  # anything a template can raise: the reason, scrubbed
        reason = redactor.scrub(f"{type(exc).__name__}: {exc}")
        raise RenderError(what, f"the template failed: {reason}") from None
    if "password" in needed:
        redactor.add(output, fragments=False)  # its host and user are no secret; it is
    return output


def render_keys(templates: Iterable[tuple[str, str]], keys: Mapping[str, Any]) -> dict[str, str]:
    """Each ``(key, template)`` rendered from the same ``keys``: the version's own, before any
    derived key is written, so that no template sees another's output or a stale value."""
    return {key: render(source, keys, what=derived_key(key)) for key, source in templates}


def derived_key(key: str) -> str:
    """How errors name the template of derived key ``key``."""
    return f"derived key {key!r}"


def register(document: Mapping[str, Any], keys: Iterable[str]) -> None:
    """Register the values of a version's derived ``keys`` with the redactor, as read back
    (a resumed rotation, AWSCURRENT): they hold the password as the template wrote it."""
    for key in keys:
        value = document.get(key)
        if isinstance(value, str):
            redactor.add(value, fragments=False)
