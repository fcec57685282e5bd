"""StreamError on its own (hyp.migration.stream raises it and re-exports it): the command line
catches it on every run without importing the stream code."""


class StreamError(Exception):
    """A migration stream that cannot be used (one line: what and where)."""
