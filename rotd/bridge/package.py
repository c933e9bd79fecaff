"""The bridge function's deployment archive: what goes in it, built the same way every time.

:func:`build` writes a zip holding only the function's modules (standard library and boto3,
which Lambda's Python runtime provides) and a minimal ``rotd/__init__.py``, with fixed
timestamps, modes and order, so that the same rotd builds the same bytes. :func:`code_sha256`
is the digest Lambda reports as a function's ``CodeSha256``: compare it with a deployed
function's to tell whether it runs this rotd's function.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# The function's handler, as Lambda's configuration names it.
HANDLER = "rotd.bridge.lambda_function.lambda_handler"
RUNTIME = "python3.12"

# rotd's own __init__ may one day import more than the function can: the archive's says only
# what the package is.
_ROTD_INIT = b'"""rotd\'s bridge rotation function (the package holds only rotd.bridge)."""\n'
_MODULES = ("__init__.py", "lambda_function.py", "wire.py")
# The earliest time a zip entry can carry; any fixed time would do.
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_MODE = 0o100644  # a regular file, rw-r--r--


@dataclass(frozen=True)
class Archive:
    path: Path
    size: int
    code_sha256: str  # base64 of the SHA-256 of the archive's bytes, as Lambda reports it


def contents() -> dict[str, bytes]:
    """The archive's files by their path inside it."""
    files = {"rotd/__init__.py": _ROTD_INIT}
    package = resources.files("rotd.bridge")
    for name in _MODULES:
        files[f"rotd/bridge/{name}"] = package.joinpath(name).read_bytes()
    return files


def archive_bytes() -> bytes:
    """The archive, byte for byte the same for the same modules."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(contents().items()):
            info = zipfile.ZipInfo(name, date_time=_TIMESTAMP)
            # Stored, not deflated: compressed bytes depend on the zlib build, and the digest
            # must not (the archive is a few kilobytes either way).
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, so that the mode below is read as one
            info.external_attr = _MODE << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def code_sha256(data: bytes | None = None) -> str:
    """Lambda's ``CodeSha256`` of ``data`` (the archive this rotd builds when None)."""
    digest = hashlib.sha256(archive_bytes() if data is None else data).digest()
    return base64.b64encode(digest).decode("ascii")


def build(path: str | Path) -> Archive:
    """Write the archive to ``path`` (replacing it) and describe what was written."""
    data = archive_bytes()
    target = Path(path)
    target.write_bytes(data)
    return Archive(path=target, size=len(data), code_sha256=code_sha256(data))
