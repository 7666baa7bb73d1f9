"""The memory budget of a run, and where a stack goes when it does not fit.

The budget is ``--memory-limit`` (``compute_context(memory_limit=...)``) or,
when none is given, what this process may still use: the cgroup's limit (a
batch job's allocation, a container) less what the cgroup uses, else the
machine's available memory, with a margin. A reconstructed stack held for the
averaging rounds may take half of it; a larger one is kept in a Zarr store in
the spill folder: ``--scratch``, else a temporary folder beside the output
(else the system's temporary folder), removed at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from holodask.errors import ParameterError

__all__ = ["parse_size", "available_memory_bytes", "memory_budget_bytes", "held_budget_bytes", "spill_folder",
           "spill_dir", "format_size", "DEFAULT_MARGIN"]

log = logging.getLogger("holodask")

#: the share of the available memory a run takes when no limit is given
DEFAULT_MARGIN = 0.7
#: the share of the budget a held stack may take (the rest: frames in flight, FFT buffers, the rounds)
HELD_SHARE = 0.5


def parse_size(value, name: str = "memory_limit") -> int:
    """Bytes of a size such as ``"4GB"``, ``"500 MiB"`` or a number of bytes."""
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise ParameterError(f"{name}: expected a size such as '4GB' or '500MiB', got {value!r}") from None
    if size <= 0:
        raise ParameterError(f"{name}: expected a positive size, got {value!r}")
    return int(size)


def format_size(n_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{int(n_bytes)} B"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_room() -> int | None:
    """What the cgroup of this process may still use (limit less usage), where it sets a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # cgroup v2: "0::/path"
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0":
            folder = Path("/sys/fs/cgroup") / parts[2].lstrip("/")
            for where in (folder, *folder.parents):
                limit = _read_int(str(where / "memory.max"))
                if limit is not None:
                    used = _read_int(str(where / "memory.current")) or 0
                    return max(limit - used, 0)
                if where == Path("/sys/fs/cgroup"):
                    break
    limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v1
    if limit is not None and limit < 1 << 60:
        used = _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes") or 0
        return max(limit - used, 0)
    return None


def _available_system() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil, or no figure on this system
        return None


def available_memory_bytes() -> int | None:
    """Memory this process may still use: the smaller of the cgroup's room and the machine's
    available memory (None where neither is known)."""
    figures = [v for v in (_cgroup_room(), _available_system()) if v is not None]
    return min(figures) if figures else None


def memory_budget_bytes() -> int | None:
    """The budget of the current run: the context's ``memory_limit``, else
    :data:`DEFAULT_MARGIN` of :func:`available_memory_bytes` (None where unknown)."""
    from holodask.cluster import current_memory_limit

    limit = current_memory_limit()
    if limit is not None:
        return limit
    available = available_memory_bytes()
    return int(available * DEFAULT_MARGIN) if available is not None else None


def held_budget_bytes() -> int | None:
    """How large a stack held in memory for the rounds may be."""
    budget = memory_budget_bytes()
    return int(budget * HELD_SHARE) if budget is not None else None


class _Spill:
    """A spill folder under ``base``: created when first needed, removed at the end."""

    def __init__(self, base):
        self.base = Path(base) if base is not None else None
        self.folder: Path | None = None
        self._lock = threading.Lock()

    def get(self) -> Path:
        with self._lock:
            if self.folder is None:
                base = self.base if self.base is not None else Path(tempfile.gettempdir())
                try:
                    self.folder = Path(tempfile.mkdtemp(prefix=".holodask-spill-", dir=base))
                except OSError as exc:
                    raise ParameterError(f"scratch: cannot create a spill folder in {base}: "
                                         f"{exc.strerror or exc}") from None
            return self.folder

    def remove(self) -> None:
        with self._lock:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None


_SPILL: contextvars.ContextVar[_Spill | None] = contextvars.ContextVar("holodask_spill", default=None)
_PROCESS_SPILL = _Spill(None)  # outside any run: the system's temporary folder, removed at exit
atexit.register(_PROCESS_SPILL.remove)


@contextlib.contextmanager
def spill_folder(base=None):
    """Within the block, stacks that do not fit the budget go to a temporary folder under
    ``base`` (made when first needed, removed at the end of the block)."""
    spill = _Spill(base)
    token = _SPILL.set(spill)
    try:
        yield spill
    finally:
        _SPILL.reset(token)
        spill.remove()


def spill_dir() -> Path:
    """The spill folder of the current block (:func:`spill_folder`), created now if needed."""
    spill = _SPILL.get() or _PROCESS_SPILL
    return spill.get()


def default_spill_base(output_name) -> str | None:
    """Beside the output file (None: the system's temporary folder)."""
    if not output_name:
        return None
    folder = os.path.dirname(os.path.abspath(os.fspath(output_name)))
    return folder if os.path.isdir(folder) and os.access(folder, os.W_OK) else None
