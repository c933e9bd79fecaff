"""Which engines are installed: the entry points of group ``rotd.engines``, loaded when asked for.

An entry point's name is an engine name (``postgres``, ``mariadb``, ...), its object a
callable that takes no arguments and returns an :class:`rotd.engines.Engine`. rotd's own
engines register the same way, in its ``pyproject.toml``. Names are read from the installed
packages' metadata once; an engine is imported and made only when first asked for, and kept.
A third party's engine that fails to load (import error, wrong contract version, a callable
that raises) is reported as an :class:`rotd.errors.EngineError` naming its package and the
error, for that engine only: the others, and rotd, carry on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from rotd.engines import API_VERSION, Engine, EngineInfo
from rotd.errors import EngineError

GROUP = "rotd.engines"


class EngineRegistry(Mapping[str, Engine]):
    """The engines of some entry points, by name. Asking for a name that is not installed,
    or whose engine cannot be loaded, raises :class:`EngineError` (never KeyError)."""

    def __init__(self, points: Iterable[EntryPoint]) -> None:
        self._points: dict[str, EntryPoint] = {}
        for point in points:
            # The first one found wins, as Python's own import does with sys.path.
            self._points.setdefault(point.name, point)
        self._engines: dict[str, Engine] = {}
        self._broken: dict[str, EngineError] = {}

    def names(self) -> list[str]:
        """The installed engine names, sorted; nothing is imported to list them."""
        return sorted(self._points)

    def __contains__(self, name: object) -> bool:
        return name in self._points

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._points)

    def __getitem__(self, name: str) -> Engine:
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        broken = self._broken.get(name)
        if broken is not None:
            raise broken
        point = self._points.get(name)
        if point is None:
            # None at all: rotd runs from a tree whose metadata predates its entry points.
            installed = ", ".join(self.names()) or "none (reinstall rotd: make install)"
            raise EngineError(name, f"no such engine is installed; installed: {installed}")
        try:
            engine = self._engines[name] = _load(point)
        except EngineError as exc:
            self._broken[name] = exc
            raise
        return engine

    def problems(self) -> list[EngineError]:
        """Every installed engine that cannot be loaded, each with its package and error."""
        found = []
        for name in self.names():
            try:
                self[name]
            except EngineError as exc:
                found.append(exc)
        return found


def _load(point: EntryPoint) -> Engine:
    package = f"{point.dist.name} {point.dist.version}" if point.dist else "an unknown package"
    where = f"entry point {point.value!r} of {package}"
    try:
        engine = point.load()()
    except Exception as exc:  # a third party's code: whatever it raises is reported
        raise EngineError(
            point.name, f"cannot be loaded from {where}: {type(exc).__name__}: {exc}"
        ) from exc
    info = getattr(engine, "info", None)
    if not isinstance(info, EngineInfo) or not callable(getattr(engine, "connect", None)):
        raise EngineError(
            point.name,
            f"{where} does not make an engine (an object with info: EngineInfo and connect())",
        )
    if info.api_version != API_VERSION:
        raise EngineError(
            point.name,
            f"{where} was written for engine API version {info.api_version}; this rotd "
            f"speaks version {API_VERSION}",
        )
    return engine  # type: ignore[no-any-return]


@functools.cache
def installed() -> EngineRegistry:
    """The engines installed with rotd, read once per process."""
    return EngineRegistry(entry_points(group=GROUP))
