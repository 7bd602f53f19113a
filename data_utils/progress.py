"""The progress line of a pass over a corpus (preprocessing, tokenizing into the data cache)."""

import sys
import time


class Progress:
    """A progress line on stderr every `interval` documents: share of the input, MB/s and time left
    (redrawn in place on a terminal)."""

    def __init__(self, total_bytes, interval):
        self.total_bytes, self.interval, self.started = total_bytes, interval, time.time()
        self.in_place = sys.stderr.isatty()

    def show(self, documents, done_bytes, final=False):
        if not final and documents % self.interval:
            return
        elapsed = max(time.time() - self.started, 1e-9)
        rate = done_bytes / elapsed
        share = done_bytes / max(self.total_bytes, 1)
        bar = "#" * int(30 * share) + "." * (30 - int(30 * share))
        left = (self.total_bytes - done_bytes) / rate if rate else 0
        line = (f"{'done' if final else 'processed'} [{bar}] {share:4.0%} {documents} documents, {done_bytes / 1e6:.1f} "
                f"of {self.total_bytes / 1e6:.1f} MB, {rate / 1e6:.2f} MB/s, {documents / elapsed:.0f} docs/s, "
                f"{'took' if final else 'ETA'} {time.strftime('%H:%M:%S', time.gmtime(elapsed if final else left))}")
        end = "\n" if final or not self.in_place else ""
        print(("\r" if self.in_place else "") + line, end=end, file=sys.stderr, flush=True)
