"""The images' HEALTHCHECK: exit 0 when turnout's GET /health answers 200, else 1.

Standard library only, and no curl in the image. /health is liveness (the process serves, its engines are
not dead), not readiness: a draining server is still healthy. The URL is TURNOUT_HEALTHCHECK_URL
(default http://127.0.0.1:8000/health: set it when the server runs on another --port); TURNOUT_API_KEY is
sent when set, for servers started with --api-key-for-ops.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/health"


def healthy(url: str, api_key: str | None, timeout: float = 4.0) -> bool:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):  # refused, timed out, or an HTTP error status
        return False


def main() -> int:
    url = os.environ.get("TURNOUT_HEALTHCHECK_URL", DEFAULT_URL)
    ok = healthy(url, os.environ.get("TURNOUT_API_KEY"))
    if not ok:
        print(f"unhealthy: GET {url} did not answer 200", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
