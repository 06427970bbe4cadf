"""SegmentLog: an append-only log of CRC-framed records in numbered segment files.

Record: [length u32 LE][crc32 u32 LE][payload]. Segments are `log-00000001.seg`, … in one
directory; appends go to the newest, which is closed and a new one begun when it grows past
`segment_bytes` or when `rotate()` is called (a snapshot then covers every closed segment).
A process never appends to a segment it did not create: after a restart it starts a new one, so
a torn record can only be at the end of a segment, and reading a segment stops there.

`write` puts a batch of records into the OS page cache (one writev(2) per batch, the records
framed beforehand by `framed` on the serving thread); `sync` makes everything written so far
durable (fdatasync). The shard acknowledges an insert only after a `sync` that covered it
returned.

Not guaranteed:
- Thread safety: one thread appends, syncs and rotates (the shard's log writer,
  buffer/durability/log_writer.py); `read_segment` and `delete_through` may run on any thread for segments
  that are no longer written.
- Durability against a lying disk or a file system that loses fsync'd data.
- With fsync=False `sync` only flushes to the OS: a machine crash (not a process crash) loses data.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SEGMENT = re.compile(r"^log-(\d{8})\.seg$")
MAX_RECORD_BYTES = 1 << 30
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024


def frame_record(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def framed(*parts: bytes) -> tuple[bytes, ...]:
    """One record whose payload is the concatenation of `parts`, as (header, *parts): nothing
    is copied, the writev takes the pieces as they are."""
    crc, length = 0, 0
    for part in parts:
        crc = zlib.crc32(part, crc)
        length += len(part)
    return (_HEADER.pack(length, crc), *parts)


def read_records(path: Path) -> Iterator[bytes]:
    """Payloads of the complete, intact records of one file, in order; stops at the first torn or
    corrupt one (logging it)."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if pos + _HEADER.size > len(data):
            log.warning("%s: torn record header at byte %d (ignored)", path, pos)
            return
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            log.warning("%s: torn record at byte %d (ignored)", path, pos)
            return
        payload = data[pos + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            log.warning("%s: corrupt record at byte %d (ignored with the rest)", path, pos)
            return
        yield payload
        pos = end


def list_segments(directory: Path) -> list[int]:
    """Numbers of the segment files in `directory`, ascending."""
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _SEGMENT.match(p.name)))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentLog:
    """Positions are byte counts over the whole log (all segments): `appended_bytes` is what was
    written, `synced_bytes` what is known durable. A rotation only retires the old file: the next
    `sync()` flushes and closes it, and makes the new segment's directory entry durable too."""

    def __init__(self, directory: str | Path, segment_bytes: int = 64 << 20, fsync: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        existing = self.segments()
        self.current = (existing[-1] if existing else 0) + 1
        self._fd = -1
        self._retired: list[int] = []  # closed segments' fds, still to be synced, then closed
        self._dir_dirty = False
        self._size = 0
        self.appended = 0  # records
        self.appended_bytes = 0
        self.synced_bytes = 0
        self.syncs = 0
        self._open()

    def segments(self) -> list[int]:
        return list_segments(self.directory)

    def path(self, seg: int) -> Path:
        return self.directory / f"log-{seg:08d}.seg"

    def _open(self) -> None:
        self._fd = os.open(self.path(self.current), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._size = 0
        self._dir_dirty = True

    @property
    def unsynced(self) -> bool:
        return self.appended_bytes > self.synced_bytes or self._dir_dirty or bool(self._retired)

    def append(self, *parts: bytes) -> None:
        """Append one record whose payload is the concatenation of `parts` (not copied)."""
        self.write([framed(*parts)])

    def write(self, records: list[tuple[bytes, ...]]) -> None:
        """Append records framed by `framed`, in order: one writev per run of records that
        fits the current segment (and IOV_MAX)."""
        iov: list[bytes] = []
        expect = 0
        for rec in records:
            if self._size + expect >= self.segment_bytes or len(iov) + len(rec) > _IOV_MAX:
                self._writev(iov, expect)
                iov, expect = [], 0
                if self._size >= self.segment_bytes:
                    self.rotate()
            iov.extend(rec)
            expect += sum(map(len, rec))
            self.appended += 1
        self._writev(iov, expect)

    def _writev(self, iov: list[bytes], expect: int) -> None:
        if not iov:
            return
        n = os.writev(self._fd, iov)
        if n != expect:  # regular files: short writes mean a full disk
            raise OSError(f"short write to {self.path(self.current)} ({n} of {expect} bytes)")
        self._size += n
        self.appended_bytes += n

    def sync(self) -> None:
        """Make everything appended so far durable (retired segments, current one, directory)."""
        if not self.unsynced:
            return
        if self.fsync:
            for fd in self._retired + [self._fd]:
                os.fdatasync(fd)
            if self._dir_dirty:
                fsync_dir(self.directory)
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()
        self._dir_dirty = False
        self.synced_bytes = self.appended_bytes
        self.syncs += 1

    def rotate(self) -> int:
        """Start the next segment; the closed one is synced and closed by the next sync.
        Returns the closed segment's number."""
        self._retired.append(self._fd)
        closed = self.current
        self.current += 1
        self._open()
        return closed

    def delete_through(self, seg: int) -> None:
        """Remove segments numbered <= seg (covered by a durable snapshot). Safe from another
        thread: it only unlinks files no longer appended to."""
        for s in list_segments(self.directory):
            if s <= seg and s < self.current:
                self.path(s).unlink(missing_ok=True)

    def read_segment(self, seg: int) -> Iterator[bytes]:
        return read_records(self.path(seg))

    def close(self) -> None:
        if self._fd < 0:
            return
        self.sync()
        os.close(self._fd)
        self._fd = -1
