import pytest

from tests.server_thread import ServerThread

BUNDLED = "turnout-tiny"


@pytest.fixture(scope="session")
def server(bundled_model_dir):
    """The bundled model behind a real server (HTTP and gRPC); loaded once per test run."""
    srv = ServerThread.for_model(bundled_model_dir, BUNDLED, grpc=True, max_num_seqs=48, num_threads=2).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def async_client(server):
    """One per test: each async test runs on an event loop of its own, and a client's pooled connections
    belong to the loop that opened them (a shared client failed with "Event loop is closed")."""
    import openai

    return openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
