"""The errors a download ends with; each names the URL with its credentials hidden."""

from __future__ import annotations

from imgpipe.errors import StageError


class FetchError(StageError):
    """A download failed or its bytes are not the expected ones."""


class ChecksumMismatch(FetchError):
    pass


class DeadlineExceeded(FetchError):
    """The download ran past its deadline."""
