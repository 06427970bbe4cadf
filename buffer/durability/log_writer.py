"""LogWriter: the shard's log is written and fsync'd by one background thread (group commit).

The serving thread frames each record (`append`: length + CRC header, a deque push) and
`kick()`s the writer once per batch of requests; the writer thread takes everything queued,
writes it with one writev, fsyncs once for the whole lot, then advances `durable` (a count of
records) and wakes the server through a pipe the server's zmq.Poller watches. The server sends a
batch's replies once `durable` has reached the count at the end of that batch. Records that
arrive during one fsync share the next one, so the group size adapts to the disk, and the disk's
latency overlaps with the serving thread's work.
The writer thread needs the GIL only a few times per batch (writev and fdatasync release it):
writing record by record, each call handed the GIL back and forth with the serving thread, and
those hand-offs cost more than the writes.

`rotate()` enqueues a marker: every record queued before it lands in segments <= the closed one,
every record after it in later ones. Its result (the closed segment number) comes back as a
Future, which is what a snapshot taken at the same moment covers.

Not guaranteed:
- After a write or fsync error (disk full, I/O error) the writer stops: `durable` never advances
  again, `error` holds the exception and `wait_durable` raises it. Nothing past the last good
  sync is ever acknowledged.
- `close()` writes and syncs what was queued; records appended after close() are lost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import Future

from buffer.durability.segment_log import SegmentLog, framed

log = logging.getLogger(__name__)


class _Rotate:
    def __init__(self) -> None:
        self.closed: Future[int] = Future()


class LogWriter:
    def __init__(self, seglog: SegmentLog):
        self.log = seglog
        self._queue: deque = deque()
        self._cv = threading.Condition()
        self.enqueued = 0  # records and markers handed in
        self.durable = 0  # of those, how many are written and synced
        self.error: BaseException | None = None
        self._stop = False
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="shard-log-writer", daemon=True)
        self._thread.start()

    # --- serving thread ---

    def append(self, *parts: bytes) -> int:
        """Queue one record (payload = the parts, not copied). Returns its position. The writer
        starts on it at the next `kick()` (the server kicks once per batch of requests)."""
        self._queue.append(framed(*parts))  # deque.append is atomic; only this thread appends
        self.enqueued += 1
        return self.enqueued

    def rotate(self) -> Future:
        """Queue a segment rotation; the Future gives the closed segment's number."""
        marker = _Rotate()
        self._queue.append(marker)
        self.enqueued += 1
        self.kick()
        return marker.closed

    def kick(self) -> None:
        """Start writing what is queued."""
        if self._queue:
            with self._cv:
                self._cv.notify()

    @property
    def pending(self) -> bool:
        return self.durable < self.enqueued

    def wait_durable(self, position: int | None = None, timeout_s: float | None = None) -> None:
        """Block until everything up to `position` (default: all queued) is durable."""
        self.kick()
        with self._cv:
            target = self.enqueued if position is None else position
            if not self._cv.wait_for(lambda: self.durable >= target or self.error is not None, timeout_s):
                raise TimeoutError(f"log not durable after {timeout_s}s")
            if self.error is not None and self.durable < target:
                raise OSError("the shard's log writer failed") from self.error

    def drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass

    # --- writer thread ---

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._stop, timeout=0.05)
                if not self._queue and self._stop:
                    return
            batch = []
            while self._queue:  # popleft is atomic: records queued meanwhile wait for the next round
                batch.append(self._queue.popleft())
            if not batch:
                continue
            try:
                run: list[tuple[bytes, ...]] = []
                for item in batch:
                    if isinstance(item, _Rotate):
                        self.log.write(run)
                        run = []
                        item.closed.set_result(self.log.rotate())
                    else:
                        run.append(item)
                self.log.write(run)
                self.log.sync()
            except Exception as err:  # kept in `error`: nothing more is acknowledged
                log.exception("shard log writer failed")
                for item in batch:
                    if isinstance(item, _Rotate) and not item.closed.done():
                        item.closed.set_exception(err)
                with self._cv:
                    self.error = err
                    self._cv.notify_all()
                self._wake()
                return
            with self._cv:
                self.durable += len(batch)
                self._cv.notify_all()
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups the server has not read yet: it will wake

    def close(self) -> None:
        """Write and sync what is queued, stop the thread, close the log."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(60)
        self.log.close()
        os.close(self._wake_w)
        os.close(self.wake_fd)
