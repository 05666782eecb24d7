"""The fence around server/http/transport.py and connection_limits.py, which subclass uvicorn's private HTTP
protocol classes.

They override some of those classes' methods (parser callbacks among them) and read some of their
attributes, and rely on how uvicorn handles a parser's errors. uvicorn is pinned to the release this was
written against (pyproject.toml); if a new uvicorn renames, drops or re-signs any of them, this fails by
name, before a subtly broken server does (an override of a method nobody calls any more fails silently:
coalescing, the JSON 400s or a limit would just stop happening).
"""

import inspect

import httptools
import pytest
from uvicorn.protocols.http import h11_impl, httptools_impl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.http.transport import protocol_over

OVERRIDDEN = {  # method -> the parameters (after self) our override assumes
    "connection_made": ["transport"],
    "connection_lost": ["exc"],
    "data_received": ["data"],
    "send_400_response": ["msg"],
    "on_response_complete": [],
}
HTTPTOOLS_CALLBACKS = {  # the parser's callbacks HttptoolsHeads counts the head with
    "on_message_begin": [],
    "on_url": ["url"],
    "on_header": ["name", "value"],
    "on_headers_complete": [],
}
OURS = {HttpToolsProtocol: {**OVERRIDDEN, **HTTPTOOLS_CALLBACKS}, H11Protocol: OVERRIDDEN}


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=lambda c: c.__name__)
def test_the_methods_we_override_are_still_uvicorns_to_call(base):
    for name, parameters in OURS[base].items():
        method = getattr(base, name, None)
        assert method is not None, f"uvicorn's {base.__name__} has no {name} any more"
        assert list(inspect.signature(method).parameters)[1:] == parameters, f"{base.__name__}.{name} changed"
    source = inspect.getsource(base)
    assert "self.send_400_response(" in source, f"{base.__name__} no longer answers parse errors through the hook"
    for attribute in ("self.loop = ", "self.connections = server_state.connections", "self.server_state = ",
                      "self.connections.add(self)", "self.connections.discard(self)", "default_headers"):
        assert attribute in source, f"{base.__name__} no longer has {attribute!r}"


@pytest.mark.parametrize("module", [httptools_impl, h11_impl], ids=["httptools", "h11"])
def test_a_request_cycle_still_says_whether_its_body_and_response_are_complete(module):
    cycle = inspect.getsource(module.RequestResponseCycle)
    assert "self.more_body = True" in cycle and "self.response_complete = False" in cycle
    assert "self.cycle.more_body = False" in inspect.getsource(module)  # when the request's last byte is in


@pytest.mark.parametrize("module", [httptools_impl, h11_impl], ids=["httptools", "h11"])
def test_each_request_cycle_is_still_assigned_to_the_protocol_and_runs_its_app_with_its_own_send(module):
    """LimitedConnection's `cycle` setter wraps each new cycle's `send` (connection: close before a body)."""
    assert "self.cycle = RequestResponseCycle(" in inspect.getsource(module)
    assert "self.scope, self.receive, self.send" in inspect.getsource(module.RequestResponseCycle.run_asgi)


def test_an_error_raised_in_an_httptools_callback_still_ends_in_send_400_response():
    # check_head raises in on_url/on_header/on_headers_complete; httptools turns it into a
    # HttpParserCallbackError, which uvicorn must still catch as a parse error.
    assert issubclass(httptools.HttpParserCallbackError, httptools.HttpParserError)
    received = inspect.getsource(HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError" in received and "self.send_400_response(" in received
    assert "_start_asgi_task" in inspect.getsource(HttpToolsProtocol.on_headers_complete), (
        "the app no longer starts in on_headers_complete, after our check of the head")


def test_h11_still_makes_its_connection_in_init_and_reads_events_through_next_event():
    # H11Heads replaces the connection after uvicorn's __init__, with one that checks each head.
    assert "self.conn = h11.Connection(" in inspect.getsource(H11Protocol.__init__)
    events = inspect.getsource(H11Protocol.handle_events)
    assert "self.conn.next_event()" in events and "except h11.RemoteProtocolError" in events


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=lambda c: c.__name__)
def test_a_finished_response_still_reports_through_on_response_complete(base):
    assert "on_response=self.on_response_complete" in inspect.getsource(base), (
        f"uvicorn's {base.__name__} no longer hands on_response_complete to its response cycle: the last bytes "
        "of a response would wait for the end of the loop pass again")


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=lambda c: c.__name__)
def test_our_protocol_overrides_what_it_means_to(base):
    ours = protocol_over(base)
    for name in OURS[base]:
        assert getattr(ours, name) is not getattr(base, name), name
