"""The one writer of every output file: checked, atomic and locked.

Every file holodask writes (the run's result, ``output_qpimage`` and
``export``, ``stats``, ``convert``, ``--report``, ``show --png``) goes through
:class:`AtomicOutput`:

* **checked before any work**: the name must not end in a separator or name a
  folder, its folder must exist and be writable, it must not be the parameter
  file or an input (also through symbolic or hard links), an existing file must
  be of the kind written (an HDF5 output never replaces a text file), must be
  writable, and no other program may have it open for writing (HDF5's own file
  lock, any ``flock``, and on Linux the open files of this user's processes);
* **symbolic links** are followed to their target, with a warning; a link to a
  file of another user, or to nothing, is refused. The link itself stays;
* **atomic**: the content goes to a temporary file in the destination folder,
  created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``, a random name, kept
  open and reopened through ``/proc/self/fd`` where there is one, so that no
  other file can be slipped in under its name), and moved over the
  destination with :func:`os.replace` only when complete (after ``fsync``).
  On an error, Ctrl-C or SIGTERM the temporary file is removed; if the process
  is killed outright, a small watcher process removes it;
* **locked**: the final step (re-check, merge with the existing file, rename)
  holds an exclusive lock on ``.NAME.holodask-lock`` beside the file, so that
  two runs writing different prefixes into one file both keep theirs; a second
  writer waits for the first (up to :data:`LOCK_TIMEOUT_S`);
* **file modes**: a new file gets ``0666`` less the umask, a replaced file keeps
  its mode (and, where allowed, its group).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

from holodask.errors import HolodaskError, InputFileError, ParameterError

try:  # POSIX; elsewhere there are no flock locks to take or to detect
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "AtomicOutput",
    "TEMP_SUFFIX",
    "LOCK_SUFFIX",
    "LOCK_TIMEOUT_S",
    "check_output_name",
    "same_file_as",
    "writers_of",
    "resolve_output",
]

#: suffix of temporary files (hidden, in the destination folder)
TEMP_SUFFIX = ".holodask-tmp"
#: suffix of the lock file beside an output while it is being replaced
LOCK_SUFFIX = ".holodask-lock"
#: how long a writer waits for another one to finish replacing the same file
LOCK_TIMEOUT_S = 600.0
#: after this long a waiting writer says what it waits for
LOCK_NOTICE_S = 2.0


# ----------------------------------------------------------------------------- kinds


def _head(path: Path, size: int = 512) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(str(path)))


def _is_html(path: Path) -> bool:
    head = _head(path).lstrip().lower()
    return not head or head.startswith((b"<!doctype html", b"<html"))


def _is_png(path: Path) -> bool:
    head = _head(path, 8)
    return not head or head == b"\x89PNG\r\n\x1a\n"


def _is_gif(path: Path) -> bool:
    head = _head(path, 6)
    return not head or head in (b"GIF87a", b"GIF89a")


def _is_zip(path: Path) -> bool:
    head = _head(path, 4)
    return not head or head in (b"PK\x03\x04", b"PK\x05\x06")


def _is_frame_cache_yaml(path: Path) -> bool:
    import yaml

    head = _head(path, 1 << 16)
    if not head.strip():
        return True
    if b"\0" in head:
        return False
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and isinstance(document.get("data"), dict)


#: kind of output -> (test of an existing file, what such a file is called)
KINDS: dict[str, tuple[Callable[[Path], bool], str]] = {
    "hdf5": (_is_hdf5, "an HDF5 file"),
    "html": (_is_html, "an HTML file"),
    "png": (_is_png, "a PNG image"),
    "gif": (_is_gif, "a GIF image"),
    "zip": (_is_zip, "an .npz (zip) archive"),
    "frame-cache-yaml": (_is_frame_cache_yaml, "a frame-cache YAML file"),
}


# ----------------------------------------------------------------------------- checks


def _label(what: str | None) -> str:
    return f"{what}: " if what else ""


def check_output_name(name, what: str | None = None) -> Path:
    """An output name as a Path; refused when empty, ending in a separator or naming a folder."""
    if name is None or str(name) == "":
        raise ParameterError(f"{what or 'output'}: an output file name is required")
    text = os.fspath(name)
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
        folder = text.rstrip("/" + os.sep) or os.sep
        raise ParameterError(
            f"{_label(what)}output file {text!r} names a folder, expected a file name "
            f"(such as '{folder}/result.hdf5')"
        )
    path = Path(os.path.abspath(text))
    if path.is_dir():
        raise InputFileError(f"{_label(what)}output file {path} is a directory, expected a file name")
    return path


def same_file_as(path, candidates: Iterable) -> str | None:
    """The first of ``candidates`` that is the file ``path`` (the same inode: through
    symbolic and hard links too), or None. Candidates may be file specs (``?...`` is ignored)."""
    try:
        target = os.stat(path)
    except OSError:  # not there (yet): the same name is the same file
        real = os.path.realpath(path)
        for candidate in candidates:
            if candidate is not None and os.path.realpath(os.fspath(candidate).partition("?")[0]) == real:
                return os.fspath(candidate).partition("?")[0]
        return None
    for candidate in candidates:
        if candidate is None:
            continue
        name = os.fspath(candidate).partition("?")[0]
        try:
            other = os.stat(name)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (target.st_dev, target.st_ino):
            return name
    return None


def resolve_output(path: Path, what: str | None = None) -> Path:
    """The file actually written for ``path``: a symbolic link's target (said in a warning;
    a link to nothing, or to another user's file, is refused)."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if not target.exists():
        raise InputFileError(
            f"{_label(what)}output file {path} is a symbolic link to {target}, which does not exist; "
            "remove the link or choose another name"
        )
    if target.is_dir():
        raise InputFileError(f"{_label(what)}output file {path} is a link to the folder {target}, expected a file")
    owner = target.stat().st_uid
    if hasattr(os, "geteuid") and owner != os.geteuid():
        raise InputFileError(
            f"{_label(what)}output file {path} is a symbolic link to {target}, which belongs to another "
            f"user (uid {owner}); holodask does not write through it (remove the link or choose another name)"
        )
    warnings.warn(
        f"{_label(what)}output file {path} is a symbolic link; writing its target {target} (the link stays)",
        UserWarning, stacklevel=4,
    )
    return target


def _proc_writers(path: Path) -> list[str]:
    """This user's processes (Linux ``/proc``) holding ``path`` open for writing."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return []
    wanted = os.path.realpath(path)
    found = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        fd_dir = f"/proc/{entry.name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != wanted:
                    continue
                with open(f"/proc/{entry.name}/fdinfo/{fd}") as info:
                    flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.append(f"process {entry.name}{_command_of(entry.name)}")
                break
    return found


def _command_of(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as file:
            return f" ({file.read().strip()})"
    except OSError:
        return ""


def writers_of(path: Path) -> list[str]:
    """Who has ``path`` open for writing: a holder of an exclusive lock on it (HDF5's file
    lock, any ``flock``) and this user's processes that opened it for writing. Empty
    where nobody does (or where it cannot be told)."""
    found = []
    if fcntl is None:
        return found
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return found
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        found.append("a program that holds its write lock")
    except OSError:  # a file system without flock: nothing to learn here
        pass
    finally:
        os.close(fd)  # also releases our shared lock
    found.extend(_proc_writers(path))
    return found


# ----------------------------------------------------------------------------- watcher


class _TempWatcher:
    """Removes a temporary file if the writing process dies without cleaning up.

    A tiny shell process waits for end-of-file on a pipe whose write end only
    this process holds; end-of-file comes on a clean close or when the process
    is killed (even with SIGKILL), and the watcher then removes the file (a
    no-op when it has already been moved into place). The file name is passed
    as an argument, never as part of the shell text.
    """

    def __init__(self, temp_path: Path):
        self._proc = None
        if os.name != "posix" or shutil.which("sh") is None:
            return
        try:
            self._proc = subprocess.Popen(
                ["sh", "-c", 'cat >/dev/null; rm -f -- "$1"', "holodask-tmp-watch", str(temp_path)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True)
        except OSError:
            self._proc = None

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._proc = None


# ----------------------------------------------------------------------------- lock


class _FileLock:
    """An exclusive ``flock`` on ``.NAME.holodask-lock`` beside the output; the lock file is
    removed on release (a waiter that then holds a removed file tries again)."""

    def __init__(self, target: Path, what: str | None):
        self.path = target.with_name(f".{target.name}{LOCK_SUFFIX}")
        self.target = target
        self.what = what
        self._fd: int | None = None

    def acquire(self, timeout_s: float | None = None) -> None:
        timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
        started = time.monotonic()
        said = False
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o666)
            except OSError as exc:
                raise _write_error(self.target, self.what, exc) from None
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                waited = time.monotonic() - started
                if waited > timeout_s:
                    raise InputFileError(
                        f"{_label(self.what)}output file {self.target} is being written by another holodask "
                        f"process (lock {self.path} held for {waited:.0f} s); try again when it has finished"
                    ) from None
                if not said and waited > LOCK_NOTICE_S:
                    print(f"holodask: waiting for another holodask process writing {self.target}",
                          file=sys.stderr)
                    said = True
                time.sleep(0.05)
                continue
            except OSError:  # no flock on this file system: go on without the lock
                pass
            try:
                on_disk = os.stat(self.path, follow_symlinks=False)
                held = os.fstat(fd)
            except FileNotFoundError:
                os.close(fd)
                continue
            if (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
                os.close(fd)  # removed and created anew by the previous holder: try again
                continue
            self._fd = fd
            return

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


# ----------------------------------------------------------------------------- errors


def _write_error(target: Path, what: str | None, exc: OSError) -> InputFileError:
    """An OSError while writing ``target`` as one message naming the output (never the temporary file)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        folder = target.parent
        if exc.errno == errno.EROFS:
            reason = f"the file system of {folder} is read-only"
        elif not os.access(folder, os.W_OK | os.X_OK):
            reason = f"the folder {folder} is not writable"
        else:
            reason = "permission denied"
    elif exc.errno == errno.ENOSPC:
        reason = f"no space left on the device of {target.parent}"
    return InputFileError(f"{_label(what)}cannot write output file {target}: {reason}")


def _mentions(exc: BaseException, names: tuple[str, ...]) -> bool:
    """Whether an error is about the temporary file (by its name or its /proc/self/fd name)."""
    text = f"{exc} {getattr(exc, 'filename', '') or ''}"
    return any(name and name in text for name in names)


# ----------------------------------------------------------------------------- the writer


@contextlib.contextmanager
def _signals_deferred():
    """Within the block, SIGINT, SIGTERM and SIGHUP wait (and arrive at its end), so that a
    temporary file is never created without being known to the code that removes it."""
    signals = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class AtomicOutput:
    """One output file, written to a temporary file and moved into place when complete.

    Use as a context manager; inside the block write :attr:`temp_path` (or the
    name :meth:`open_name` gives, which is the same file even if the folder is
    shared with others)::

        with AtomicOutput("result.h5", what="output_name", kind="hdf5") as out:
            with h5py.File(out.open_name(), "w") as f:
                ...

    Parameters
    ----------
    path : path-like
        The destination. A symbolic link is written through to its target (see
        :func:`resolve_output`).
    what : str, optional
        The parameter or option that named it, for messages (``"output_name"``, ``"--report"``).
    kind : str
        What is written (a key of :data:`KINDS`): an existing file must be one.
    protected : iterable of paths
        Files that must not be overwritten (inputs, the parameter file); file specs allowed.
    merge : callable, optional
        ``merge(temp_open_name, existing_path)``, called at commit under the lock when the
        destination exists: brings what is to be kept from the existing file into the new one.
    accept_existing : callable, optional
        ``accept_existing(path) -> str | None``: a reason to refuse replacing an existing file
        of the right kind (e.g. an HDF5 file that is not a QPImage), or None.
    """

    def __init__(self, path, *, what: str | None = None, kind: str = "hdf5", protected: Iterable = (),
                 merge: Callable[[str, Path], None] | None = None,
                 accept_existing: Callable[[Path], str | None] | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown output kind {kind!r}")
        self.requested = path
        self.what = what
        self.kind = kind
        self.protected = [p for p in protected if p is not None]
        self.merge = merge
        self.accept_existing = accept_existing
        self.path: Path | None = None  # the file written (a link's target)
        self.temp_path: Path | None = None
        self._fd: int | None = None
        self._watcher: _TempWatcher | None = None

    # -- context management ---------------------------------------------------------
    def __enter__(self) -> "AtomicOutput":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
            return False
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, HolodaskError) and _mentions(exc, self._temp_names):
            raise _write_error(self.path, self.what, exc) from exc
        return False

    #: the names the temporary file went by (for errors raised after it is gone)
    _temp_names: tuple[str, ...] = ()

    # -- checks ----------------------------------------------------------------------
    def check(self) -> Path:
        """Every check that can be made before writing; the file to be written."""
        path = check_output_name(self.requested, self.what)
        folder = path.parent
        if not folder.is_dir():
            raise InputFileError(f"{_label(self.what)}output file {path}: folder {folder} does not exist")
        path = resolve_output(path, self.what)
        match = same_file_as(path, self.protected)
        if match is not None:
            raise ParameterError(
                f"{_label(self.what)}output file {path} is the input {match}; it would be overwritten "
                "(choose another name)"
            )
        self._check_existing(path)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise InputFileError(
                f"{_label(self.what)}cannot write output file {path}: the folder {path.parent} is not writable"
            )
        return path

    def _check_existing(self, path: Path) -> None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(f"{_label(self.what)}output file {path} exists and is not a regular file")
        if not os.access(path, os.R_OK):
            raise InputFileError(f"{_label(self.what)}output file {path} exists but cannot be read")
        test, called = KINDS[self.kind]
        try:
            right_kind = info.st_size == 0 or test(path)  # an empty file holds nothing to lose
        except OSError:
            right_kind = False
        if not right_kind:
            raise InputFileError(
                f"{_label(self.what)}output file {path} exists and is not {called}; "
                "holodask does not overwrite it (remove it or choose another name)"
            )
        if self.accept_existing is not None and info.st_size:
            reason = self.accept_existing(path)
            if reason:
                raise InputFileError(
                    f"{_label(self.what)}output file {path} exists and {reason}; holodask does not "
                    "overwrite it (remove it or choose another name)"
                )
        if not info.st_mode & 0o222 or not os.access(path, os.W_OK):  # the mode bits: also for root
            raise InputFileError(
                f"{_label(self.what)}output file {path} is read-only; holodask does not replace it "
                "(make it writable or choose another name)"
            )
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid() and not getattr(self, "_said_owner", False):
            self._said_owner = True
            warnings.warn(f"{_label(self.what)}output file {path} belongs to another user (uid {info.st_uid}); "
                          "it is replaced by a file of yours", UserWarning, stacklevel=4)
        writers = writers_of(path)
        if writers:
            raise InputFileError(
                f"{_label(self.what)}output file {path} is open for writing in another program "
                f"({', '.join(writers)}); close it there first, or choose another name: replacing it "
                "now would lose what that program writes"
            )

    # -- life cycle --------------------------------------------------------------------
    def open(self) -> None:
        """Check the destination and create the temporary file."""
        self.path = self.check()
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        with _signals_deferred():  # created and known (to abort and the watcher) as one step
            self._create_temp(flags)

    def _create_temp(self, flags: int) -> None:
        for _ in range(100):
            temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
            try:
                self._fd = os.open(temp, flags, 0o666)  # the kernel applies the umask
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise _write_error(self.path, self.what, exc) from None
        else:  # pragma: no cover - a hundred random names taken
            raise InputFileError(f"{_label(self.what)}cannot create a temporary file beside {self.path}")
        self.temp_path = temp
        self._temp_names = (temp.name, f"/proc/self/fd/{self._fd}")
        self._watcher = _TempWatcher(temp)

    def open_name(self) -> str:
        """A name that opens the temporary file itself (``/proc/self/fd/N`` where there is one)."""
        if self._fd is None:
            raise HolodaskError(f"output file {self.path} is not open")
        proc_name = f"/proc/self/fd/{self._fd}"
        return proc_name if os.path.exists(proc_name) else str(self.temp_path)

    def commit(self) -> None:
        """Re-check under the lock, merge with the existing file, and move the new file into place."""
        if self.temp_path is None:
            return
        lock = _FileLock(self.path, self.what)
        try:
            lock.acquire()
            try:
                self._check_existing(self.path)  # it may have changed while we computed
                existing = self.path.exists()
                if existing and self.merge is not None and os.path.getsize(self.path):
                    self.merge(self.open_name(), self.path)
                self._settle(existing)
                self._check_temp_is_ours()
                os.replace(self.temp_path, self.path)
                self.temp_path = None
                _fsync_folder(self.path.parent)
            finally:
                lock.release()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and not isinstance(exc, HolodaskError):
                raise _write_error(self.path, self.what, exc) from exc
            raise
        finally:
            self._close()

    def _settle(self, existing: bool) -> None:
        """The new file's mode (an existing file's, else 0666 less the umask) and data on disk."""
        if existing and hasattr(os, "fchmod"):
            info = os.stat(self.path)
            os.fchmod(self._fd, stat.S_IMODE(info.st_mode))
            if hasattr(os, "fchown") and info.st_gid != os.fstat(self._fd).st_gid:
                try:
                    os.fchown(self._fd, -1, info.st_gid)
                except OSError:
                    pass
        os.fsync(self._fd)

    def _check_temp_is_ours(self) -> None:
        held = os.fstat(self._fd)
        on_disk = os.stat(self.temp_path, follow_symlinks=False)
        if (held.st_dev, held.st_ino) != (on_disk.st_dev, on_disk.st_ino):
            raise InputFileError(
                f"{_label(self.what)}the temporary file {self.temp_path} of output file {self.path} was "
                "replaced by someone else; nothing was written"
            )

    def abort(self) -> None:
        """Remove the temporary file; the destination stays untouched."""
        if self.temp_path is not None:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass
            except OSError:
                pass
            self.temp_path = None
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
