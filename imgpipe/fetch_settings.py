"""What bounds one download: timeouts, retries, deadline, rate floor, redirects, size."""

from __future__ import annotations

from dataclasses import dataclass

KB = 1024  # as download.max_total_gb counts in 1024s
# The download params' defaults (imgpipe.sources.common reads them from here): generous
# enough that no real download on a real link ever meets them.
DEFAULT_DEADLINE = 6 * 3600.0  # seconds for a whole download
DEFAULT_MIN_RATE_KBPS = 1.0  # KB/s, a link slower than any still in use
RATE_WINDOW = 30.0  # seconds the rate is measured over: a short stall is not a slow link
MAX_REDIRECTS = 10  # what browsers allow is about 20; a file never needs more than a few


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # seconds without any data
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    deadline: float = DEFAULT_DEADLINE  # seconds for everything, retries and waits included
    min_rate: float = DEFAULT_MIN_RATE_KBPS * KB  # bytes/s over rate_window; 0: no floor
    rate_window: float = RATE_WINDOW
    max_redirects: int = MAX_REDIRECTS
    max_bytes: int | None = None  # None: as large as the file is
