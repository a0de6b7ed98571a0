"""Running the scoring API under uvicorn, in the foreground (CLI) or in a thread (tests,
benchmarks, a bank node that also trains)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from fraudfl.errors import FraudflError


def uvicorn_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    # httptools and uvloop are used when installed; access logs cost more than scoring itself.
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning",
                          lifespan="off")


class ServerThread:
    """A uvicorn server in a daemon thread; ``port=0`` binds a free port (see :attr:`port`)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise FraudflError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.port = int(self._sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn_config(app, host, self.port))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="scoring-api",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scoring API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
