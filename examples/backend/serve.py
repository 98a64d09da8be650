"""Serve the backend with uvicorn on loopback; prints 'listening on URL' once ready.

python examples/backend/serve.py --port 8001
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

import cxtrace

sys.path.insert(0, str(Path(__file__).resolve().parent))


class _Server(uvicorn.Server):
    async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        port = self.servers[0].sockets[0].getsockname()[1]
        print(f"backend listening on http://127.0.0.1:{port}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="the example Django backend")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "backend.settings"  # this process is the backend
    from backend.asgi import application  # noqa: PLC0415 - after sys.path is set

    server = _Server(
        uvicorn.Config(
            application, host="127.0.0.1", port=args.port, lifespan="off", log_level="warning"
        )
    )
    try:
        server.run()
    finally:
        cxtrace.shutdown()


if __name__ == "__main__":
    main()
