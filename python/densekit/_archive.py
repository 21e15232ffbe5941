"""Model files at the byte level: the atomic write and a bounded read of .npz archives.

Writing: a temporary file beside the target (the target of a symbolic link), named with this
host and process id so that a later save can remove the ones a killed process left, then
``os.replace``. A new file gets ``0o666 & ~umask``, a replaced one keeps its mode. Reading
opens only the entries asked for, checks each one's .npy header (shape, dtype, size) before
reading any data, and refuses compressed entries and entries claiming more bytes than the
archive holds, so what a read allocates is bounded by the file's size. The JSON header is
bounded in size and nesting, and its floats are finite and within float32's range.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import stat
import zipfile
from typing import NamedTuple

import numpy as np

MAX_HEADER_BYTES = 4 * 2**20  # the JSON header entry
MAX_JSON_DEPTH = 32  # nesting of arrays and objects in the JSON header
MAX_FLOAT = float(np.finfo(np.float32).max)  # the largest magnitude of a float in a header
_NPY_HEADER_LIMIT = 10_000  # numpy's own limit for a trusted .npy header
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_NAME_KEPT = 100  # characters of the target's name used in its temporary files' names


class ArchiveError(ValueError):
    """An archive or one of its entries is malformed (the caller adds the file's name)."""


# -- writing -------------------------------------------------------------------------------
def write_atomically(path, entries: dict) -> None:
    """Write ``entries`` (name -> array) as an .npz archive at ``path`` (through a symbolic
    link to its target), so that the file is either the old one or the complete new one."""
    write_file_atomically(path, lambda file: np.savez(file, **entries))


def write_file_atomically(path, write) -> None:
    """Call ``write(file)`` on a new binary file that then replaces ``path`` (through a
    symbolic link, its target) in one step: the file is either the old one or the new one."""
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    remove_stale_temporaries(directory, name)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: os.open applies the umask to 0o666
    temporary, descriptor = _create_temporary(directory, name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            if mode is not None:
                os.fchmod(file.fileno(), mode)
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(directory)


def temporary_pattern(name: str) -> re.Pattern:
    """The names of the temporary files that saves of ``name`` create, with the host and
    process id of the saving process as groups."""
    return re.compile(
        rf"\.{re.escape(name[:_NAME_KEPT])}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{{1,10}})"
        r"\.[0-9a-f]{16}\.tmp"
    )


def temporary_name(name: str, pid: int, host: str = _HOST) -> str:
    """A fresh name for a temporary file of a save of ``name`` by process ``pid``."""
    return f".{name[:_NAME_KEPT]}.{host}.{pid}.{secrets.token_hex(8)}.tmp"


def _create_temporary(directory: str, name: str) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        temporary = os.path.join(directory, temporary_name(name, os.getpid()))
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue


def remove_stale_temporaries(directory: str, name: str) -> None:
    """Remove the temporary files of saves of ``name`` whose process, on this host, is gone
    (killed during a save). Those of live processes (concurrent saves) are kept."""
    pattern = temporary_pattern(name)
    try:
        candidates = os.listdir(directory)
    except OSError:
        return
    for candidate in candidates:
        match = pattern.fullmatch(candidate)
        if match is None or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid < 1 or pid == os.getpid() or _process_exists(pid):
            continue
        stale = os.path.join(directory, candidate)
        try:
            if stat.S_ISREG(os.lstat(stale).st_mode):
                os.unlink(stale)
        except OSError:
            pass  # removed by a concurrent save, or not ours to remove


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a pid we cannot ask about): keep its file
    return True


def _sync_directory(directory: str) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# -- reading -------------------------------------------------------------------------------
class ArrayInfo(NamedTuple):
    """An entry's .npy header: its shape, dtype and order, and where its data starts."""

    member: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    data_offset: int


class Archive:
    """An .npz file opened for bounded reading; use as a context manager."""

    def __init__(self, path: str):
        # O_NONBLOCK: a FIFO planted at the path must not block the open
        self._file = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
        try:
            status = os.fstat(self._file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise ArchiveError("not a regular file")
            self._size = status.st_size
            self._zip = zipfile.ZipFile(self._file)
        except BaseException:
            self._file.close()
            raise
        self._claimed: dict[str, int] = {}

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info) -> None:
        self._zip.close()
        self._file.close()

    def info(self, name: str, kinds: str = "f") -> ArrayInfo:
        """The .npy header of entry ``name`` (an array of a dtype kind in ``kinds``),
        checked against the entry's declared size; no data is read."""
        try:
            member = self._zip.getinfo(f"{name}.npy")
        except KeyError:
            raise ArchiveError(f"entry {name!r} is missing") from None
        if member.compress_type != zipfile.ZIP_STORED or member.compress_size != member.file_size:
            raise ArchiveError(
                f"entry {name!r} is compressed (densekit writes stored entries only)"
            )
        self._claimed[name] = member.file_size
        if sum(self._claimed.values()) > self._size:
            raise ArchiveError(
                f"entries claim {sum(self._claimed.values())} bytes, the file has {self._size}"
            )
        with self._zip.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(stream, _NPY_HEADER_LIMIT)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(stream, _NPY_HEADER_LIMIT)
            else:
                raise ArchiveError(f"entry {name!r}: unsupported .npy version {version}")
            data_offset = stream.tell()
        shape, fortran_order, dtype = header
        if dtype.kind not in kinds or dtype.hasobject or dtype.itemsize not in (1, 4, 8):
            raise ArchiveError(f"entry {name!r}: unexpected dtype {dtype}")
        data_bytes = dtype.itemsize * product(shape)
        if data_offset + data_bytes != member.file_size:
            raise ArchiveError(
                f"entry {name!r}: shape {shape} ({data_bytes} bytes) does not match the "
                f"entry's size ({member.file_size - data_offset} bytes of data)"
            )
        return ArrayInfo(member, shape, dtype, fortran_order, data_offset)

    def read(self, info: ArrayInfo) -> np.ndarray:
        """The data of an entry described by ``info`` (read-only)."""
        count = product(info.shape)
        with self._zip.open(info.member) as stream:
            stream.read(info.data_offset)
            data = stream.read(count * info.dtype.itemsize + 1)  # +1: reach EOF, check CRC
        if len(data) != count * info.dtype.itemsize:
            raise ArchiveError(f"entry {info.member.filename!r} is truncated")
        order = "F" if info.fortran_order else "C"
        return np.frombuffer(data, info.dtype, count).reshape(info.shape, order=order)

    def json_header(self, name: str = "header"):
        """The JSON document stored as UTF-8 bytes (uint8) in entry ``name``, bounded in size
        (``MAX_HEADER_BYTES``) and nesting (``MAX_JSON_DEPTH``)."""
        info = self.info(name, kinds="u")
        if info.dtype.itemsize != 1 or len(info.shape) != 1:
            raise ArchiveError(f"entry {name!r}: expected a 1-d uint8 array")
        if info.shape[0] > MAX_HEADER_BYTES:
            raise ArchiveError(
                f"entry {name!r}: {info.shape[0]} bytes, more than {MAX_HEADER_BYTES}"
            )
        text = self.read(info).tobytes().decode("utf-8")
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise ArchiveError(
                f"entry {name!r}: JSON nested {depth} deep (at most {MAX_JSON_DEPTH})"
            )
        return json.loads(text, parse_float=_bounded_float, parse_constant=_refuse_constant)


def _bounded_float(text: str) -> float:
    value = float(text)
    if not abs(value) <= MAX_FLOAT:
        raise ArchiveError(f"header: number {text[:40]} beyond float32's range")
    return value


def _refuse_constant(text: str):
    raise ArchiveError(f"header: non-finite number {text}")


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in the JSON ``text`` (brackets in strings ignored)."""
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).encode("utf-8")
    codes = np.frombuffer(outside_strings, np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
    steps -= np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def product(shape) -> int:
    """The number of elements of ``shape`` (Python ints: no overflow)."""
    count = 1
    for extent in shape:
        count *= int(extent)
    return count
