"""How the engine writes its files and opens them again: the one place for both.

* Writing (``replace_atomically``): the bytes go to a new file in the target's folder, created
  with mode 0o666 so the umask applies as for any ``open(path, "w")`` (``tempfile.mkstemp``
  creates 0o600 files and the rename keeps that mode), are fsynced, and the file is renamed over
  the target: a crash leaves the old file or the new one, never a mix. An existing target that
  is not a regular file (a device, a fifo, a folder) is refused before anything is written, so
  saving to ``/dev/full`` as root cannot replace the device node. An ``OSError`` (read-only file
  system, no space left, a file where a folder should be) becomes an ``OutputError`` naming the
  path, and the old file is left as it was.
* Reading (``open_regular``, ``read_regular``): files are opened without blocking (opening a
  fifo for reading would wait for a writer) and anything but a regular file is refused with an
  ``IndexFormatError`` naming it, so a fifo or ``/dev/zero`` in place of a file neither hangs
  nor reads without end; ``follow_symlinks=False`` also refuses a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from .errors import IndexFormatError, InputError, OutputError

__all__ = ["fsync_dir", "open_regular", "read_regular", "replace_atomically", "temp_file"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a fifo"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _kind(mode: int) -> str:
    """What a file of ``mode`` is, in words ("a folder", "a fifo", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def temp_file(folder: str | os.PathLike, prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new, empty file ``folder/prefix<random>suffix`` opened for writing: (fd, path).

    Like ``tempfile.mkstemp`` (exclusive create, no symlink followed) but with mode 0o666 & ~umask.
    """
    flags = (
        os.O_RDWR
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_BINARY", 0)
    )
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(5)}{suffix}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.fspath(folder))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames in ``folder`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _output_error(path: Path, e: OSError) -> OutputError:
    """The OutputError for an OSError met while writing ``path``."""
    why = e.strerror or str(e)
    return OutputError(
        f"could not write {str(path)!r}: {why} ({type(e).__name__}); check that its folder exists, "
        "is writable and has free space. A file that was at that path is unchanged"
    )


def replace_atomically(
    path: str | os.PathLike, chunks: Iterable[bytes], *, prefix: str, suffix: str = "", sync_dir: bool = True
) -> None:
    """Write ``chunks`` to ``path``: temp file ``prefix<random>suffix`` in its folder, fsync, rename.

    Args:
        path: the target; a symlink to a regular file is replaced, not followed.
        chunks: the bytes to write, in order.
        prefix, suffix: the temporary file's name around its random part.
        sync_dir: fsync the folder after the rename (the rename's durability); False for callers
            whose later write syncs it.

    Raises:
        InputError: ``path`` exists and is not a regular file (nothing is written).
        OutputError: writing failed (an OSError: read-only, full, a file where a folder should be);
            a file that was at ``path`` is unchanged.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:  # e.g. a file where a folder of the path should be
        raise _output_error(path, e) from e
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(
            f"{str(path)!r} is {_kind(mode)}, not a regular file; refusing to replace it. Choose a file path"
        )
    try:
        fd, tmp = temp_file(path.parent, prefix, suffix)
    except OSError as e:
        raise _output_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _output_error(path, e) from e
        raise
    if sync_dir:
        fsync_dir(path.parent)


def open_regular(path: str | os.PathLike, hint: str, *, follow_symlinks: bool = True) -> BinaryIO:
    """Open a regular file for binary reading, without blocking (a fifo does not wait for a writer).

    Args:
        path: the file.
        hint: what to do, ending the error message.
        follow_symlinks: False refuses a symbolic link too.

    Returns:
        The open binary file.

    Raises:
        IndexFormatError: ``path`` is not a regular file (a folder, fifo, device, socket; a symbolic
            link with ``follow_symlinks=False``), naming it.
        FileNotFoundError: no file at ``path`` (passed on as it is).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise IndexFormatError(
                f"{os.fspath(path)!r} is a symbolic link; only the engine's own regular files are read. {hint}"
            ) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise IndexFormatError(f"{os.fspath(path)!r} is {_kind(mode)}, not a regular file. {hint}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, limit: int, hint: str, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Raises:
        IndexFormatError: as ``open_regular``, and for a file larger than ``limit`` bytes.
        FileNotFoundError: no file at ``path``.
    """
    with open_regular(path, hint, follow_symlinks=follow_symlinks) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise IndexFormatError(
            f"{os.fspath(path)!r} is larger than {limit} bytes, too large for what it should hold. {hint}"
        )
    return data
