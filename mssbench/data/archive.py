"""Zip archives read the way downloaded datasets need: front to back, and checked whole.

* :class:`ZipMemberStream` decompresses the first file of an archive while the archive's bytes
  arrive, so an archive inside another archive is read without extracting it to disk or
  decompressing it twice; its CRC-32 is checked at the end.
* :func:`open_zip` opens an archive on disk with :mod:`zipfile` and refuses a truncated one
  that :mod:`zipfile` would accept (an end record found before the end of the file).
* :func:`zip_members` lists the files of an archive, without folders and ``__MACOSX/`` files.

Every failure is a :class:`~mssbench.errors.DataError` naming the archive. Read the CSV text
of a member with :func:`mssbench.data.stream.stream_csv`.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from mssbench.errors import DataError

__all__ = ["ZipMemberStream", "open_zip", "zip_members"]

_READ_SIZE = 1 << 20


class ZipMemberStream:
    """The first file of a zip archive, decompressed while the archive is read front to back.

    :mod:`zipfile` needs a seekable archive (it reads the central directory at the end); an
    archive that is itself a member of another archive can only be read forwards without
    decompressing it twice. This reader parses the local file headers, inflates the first file's
    data as it arrives (folder entries and ``__MACOSX/`` files before it are skipped) and checks
    its CRC-32 at the end. Stored and deflated members are supported, with or without a trailing
    data descriptor and with zip64 sizes.

    Args:
        raw: The archive's bytes, read sequentially.
        label: Name of the archive in error messages.

    Attributes:
        member: Name of the file being read.
    """

    def __init__(self, raw: BinaryIO, label: str) -> None:
        self._raw = raw
        self._label = label
        self._pending = b""  # bytes read past the end of a compressed stream
        self._buf = bytearray()
        self._eof = False
        self._crc = 0
        self.member = ""
        self.member = self._next_header()

    def _fail(self, what: str) -> DataError:
        return DataError(f"{self._label}: {what}")

    def _read(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        return self._raw.read(n)

    def _exact(self, n: int, what: str) -> bytes:
        data = b""
        while len(data) < n:
            more = self._read(n - len(data))
            if not more:
                raise self._fail(f"truncated zip archive (it ends inside the {what})")
            data += more
        return data

    def _next_header(self) -> str:
        while True:
            head = self._read(4)
            if head != b"PK\x03\x04":
                if not head:
                    raise self._fail("empty file where a zip archive was expected")
                if self.member or head == b"PK\x01\x02":
                    raise self._fail("no file inside the zip archive")
                raise self._fail("not a zip archive (no local file header at the start)")
            fixed = self._exact(26, "local file header")
            (_, flags, method, _, _, crc, csize, usize, n_name, n_extra) = struct.unpack(
                "<HHHHHIIIHH", fixed
            )
            raw_name = self._exact(n_name, "local file header")
            extra = self._exact(n_extra, "local file header")
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
            if flags & 0x1:
                raise self._fail(f"member {name!r} is encrypted; mssbench cannot read it")
            if method not in (0, 8):
                raise self._fail(
                    f"member {name!r} uses zip compression method {method}; only stored (0) and "
                    "deflate (8) are supported: re-create the archive with a standard zip tool"
                )
            csize, _, self._zip64 = _zip64_sizes(extra, csize, usize)
            if method == 0 and flags & 0x8 and csize == 0:
                raise self._fail(f"member {name!r} is stored with unknown size; cannot stream it")
            self._flags, self._header_crc, self._remaining = flags, crc, csize
            self._inflate = zlib.decompressobj(-15) if method == 8 else None
            if name.endswith("/") or name.startswith("__MACOSX/"):
                self.member = name
                while not self._eof:
                    self._fill(1 << 30, keep=False)
                self._eof = False
                self._crc = 0
                continue
            return name

    def _descriptor(self) -> int:
        """The CRC-32 the archive records for the member just read."""
        if not self._flags & 0x8:
            return self._header_crc
        head = self._exact(4, "data descriptor")
        if head == b"PK\x07\x08":
            head = self._exact(4, "data descriptor")
        crc = struct.unpack("<I", head)[0]
        self._exact(16 if self._zip64 else 8, "data descriptor")  # the sizes, not needed
        return crc

    def _fill(self, want: int, keep: bool = True) -> None:
        while len(self._buf) < want and not self._eof:
            if self._inflate is None:
                if self._remaining == 0:
                    self._finish()
                    break
                out = self._read(min(_READ_SIZE, self._remaining))
                if not out:
                    raise self._fail(f"truncated zip archive (member {self.member!r} is cut off)")
                self._remaining -= len(out)
            else:
                chunk = self._read(_READ_SIZE)
                if not chunk:
                    raise self._fail(f"truncated zip archive (member {self.member!r} is cut off)")
                try:
                    out = self._inflate.decompress(chunk)
                except zlib.error as exc:
                    raise self._fail(f"member {self.member!r} is corrupt ({exc})") from None
            self._crc = zlib.crc32(out, self._crc)
            if keep:
                self._buf += out
            if self._inflate is not None and self._inflate.eof:
                self._pending = self._inflate.unused_data + self._pending
                self._finish()

    def _finish(self) -> None:
        self._eof = True
        crc = self._descriptor()
        if crc != self._crc:
            raise self._fail(
                f"member {self.member!r} is corrupt (its CRC-32 is {self._crc:08x}, the archive "
                f"records {crc:08x}); download the file again"
            )

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decompressed bytes (fewer only at the end); ``-1`` reads everything."""
        if n is None or n < 0:
            while not self._eof:
                self._fill(len(self._buf) + _READ_SIZE * 8)
            n = len(self._buf)
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _zip64_sizes(extra: bytes, csize: int, usize: int) -> tuple[int, int, bool]:
    """Sizes from the zip64 extra field (where the header holds 0xFFFFFFFF), and zip64-ness.

    A zip64 member's data descriptor holds 8-byte sizes.
    """
    zip64 = False
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[pos : pos + 4])
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x0001:
            zip64 = True
            values = list(struct.unpack(f"<{len(body) // 8}Q", body[: len(body) // 8 * 8]))
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
        pos += 4 + size
    return csize, usize, zip64


def open_zip(f: BinaryIO, path: Path, stack: ExitStack, advice: str) -> zipfile.ZipFile:
    """The archive in the open file ``f`` (``path`` on disk), closed with ``stack``.

    Args:
        f: The archive, opened for binary reading (seekable).
        path: Its path, for messages and its size.
        stack: Closes the archive.
        advice: What to do about a bad archive, ending the message (``download it again
            from URL``).

    Raises:
        DataError: Not a zip archive, or a truncated one.
    """
    size = path.stat().st_size
    try:
        archive = stack.enter_context(zipfile.ZipFile(f))
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{path}: not a zip archive, or a truncated one ({exc}; {size:,} bytes on disk); "
            f"{advice}"
        ) from None
    # zipfile accepts an end record found anywhere in the last 64 KiB, treating what follows
    # as a comment: a cut archive of stored zips can then pass for one of its inner zips.
    f.seek(max(size - 22 - len(archive.comment), 0))
    if f.read(4) != b"PK\x05\x06":
        raise DataError(
            f"{path}: not a zip archive, or a truncated one (its end record is not at the end "
            f"of the file; {size:,} bytes on disk); {advice}"
        )
    return archive


def zip_members(archive: zipfile.ZipFile) -> list[str]:
    """Names of the files in ``archive``, in stored order (no folders, no ``__MACOSX/``)."""
    return [
        m.filename
        for m in archive.infolist()
        if not m.is_dir() and not m.filename.startswith("__MACOSX/")
    ]
