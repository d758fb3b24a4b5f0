"""Web helpers without a worker: what the log says of malformed requests."""

from __future__ import annotations


def test_malformed_requests_are_logged_as_one_warning_line_without_a_traceback() -> None:
    import logging

    from aiohttp.http_exceptions import BadHttpMessage

    from vfstream.web.views import MalformedRequestLog

    try:
        raise BadHttpMessage("Invalid header line")
    except BadHttpMessage:
        import sys

        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("127.0.0.1",),
            sys.exc_info(),
        )
    assert MalformedRequestLog().filter(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == "refused a malformed HTTP request (400): Invalid header line"

    try:
        raise RuntimeError("a real fault")
    except RuntimeError:
        import sys

        kept = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Unhandled exception", (), sys.exc_info()
        )
    assert MalformedRequestLog().filter(kept)
    assert kept.levelno == logging.ERROR and kept.exc_info is not None
