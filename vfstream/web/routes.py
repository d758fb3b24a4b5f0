"""Every route of a worker, registered by the worker's assembly (``vfstream.stream.assembly``)
with the worker passed in: the table views (``views``), the operator's console
(``console``), the service's own routes, the tokens (``auth``) and the security headers.
The modules it composes do not import each other back, nor the worker's app."""

from __future__ import annotations

from vfstream.web.auth import install_auth
from vfstream.web.console import register_console_views
from vfstream.web.ports import Worker
from vfstream.web.views import (
    add_security_headers,
    quiet_malformed_requests,
    register_service_views,
    register_table_views,
)


def register_views(stream: Worker) -> None:
    """Every route of a worker: the table views, the operator's console, the service's own."""
    # Every request of every route, Faust's own included, shows a token when tokens are set
    # (vfstream.web.auth); every response carries the security headers; a malformed request
    # is one log line.
    install_auth(stream)
    stream.app.web.web_app.on_response_prepare.append(add_security_headers)
    quiet_malformed_requests()
    register_table_views(stream)
    register_console_views(stream)
    register_service_views(stream)
