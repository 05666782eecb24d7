"""The fence around server/http/transport.py, which subclasses uvicorn's private HTTP protocol classes.

It overrides three of their methods and reads two of their attributes. uvicorn is pinned to the release
this was written against (pyproject.toml); if a new uvicorn renames, drops or re-signs any of them, this
fails by name, before a subtly broken server does (an override of a method nobody calls any more fails
silently: coalescing or the JSON 400s would just stop happening).
"""

import inspect

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.http.transport import protocol_over

OVERRIDDEN = {  # method -> the parameters (after self) our override assumes
    "connection_made": ["transport"],
    "send_400_response": ["msg"],
    "on_response_complete": [],
}


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=lambda c: c.__name__)
def test_the_methods_we_override_are_still_uvicorns_to_call(base):
    for name, parameters in OVERRIDDEN.items():
        method = getattr(base, name, None)
        assert method is not None, f"uvicorn's {base.__name__} has no {name} any more"
        assert list(inspect.signature(method).parameters)[1:] == parameters, f"{base.__name__}.{name} changed"
    source = inspect.getsource(base)
    assert "self.send_400_response(" in source, f"{base.__name__} no longer answers parse errors through the hook"
    assert "self.server_state" in source and "default_headers" in inspect.getsource(protocol_over)


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=lambda c: c.__name__)
def test_a_finished_response_still_reports_through_on_response_complete(base):
    assert "on_response=self.on_response_complete" in inspect.getsource(base), (
        f"uvicorn's {base.__name__} no longer hands on_response_complete to its response cycle: the last bytes "
        "of a response would wait for the end of the loop pass again")


@pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=lambda c: c.__name__)
def test_our_protocol_overrides_what_it_means_to(base):
    ours = protocol_over(base)
    for name in OVERRIDDEN:
        assert getattr(ours, name) is not getattr(base, name), name
