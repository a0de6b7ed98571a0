"""Running the scoring API under uvicorn, in the foreground (CLI) or in a thread (tests,
benchmarks, a bank node that also trains)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from fraudfl.config import ServerTLSSettings
from fraudfl.errors import FraudflError


def uvicorn_config(
    app: FastAPI, host: str, port: int, tls: ServerTLSSettings | None = None
) -> uvicorn.Config:
    """``tls``: HTTPS with this certificate; with ``client_cafile``, clients must present a
    certificate it signed (mutual TLS)."""
    # httptools and uvloop are used when installed; access logs cost more than scoring itself.
    options: dict[str, object] = {}
    if tls is not None:
        options = {"ssl_certfile": str(tls.certfile), "ssl_keyfile": str(tls.keyfile)}
        if tls.client_cafile is not None:
            options |= {"ssl_ca_certs": str(tls.client_cafile),
                        "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning",
                            lifespan="off", **options)  # type: ignore[arg-type]
    if tls is not None:
        try:
            config.load()  # loads the certificate now: a bad file is a FraudflError at start
        except (OSError, ssl.SSLError) as exc:
            raise FraudflError(f"{tls.certfile}: cannot load the TLS certificate/key: {exc}") \
                from exc
    return config


def bind_listener(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn (``port=0``: a free one).

    Bound here rather than by uvicorn so that a port in use or an unknown host is a
    :class:`FraudflError` before anything else starts, not a uvicorn log line and exit 3.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FraudflError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class ServerThread:
    """A uvicorn server in a daemon thread; ``port=0`` binds a free port (see :attr:`port`)."""

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
        tls: ServerTLSSettings | None = None,
    ) -> None:
        self.host = host
        self.scheme = "http" if tls is None else "https"
        self._sock = bind_listener(host, port)
        self.port = int(self._sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn_config(app, host, self.port, tls))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="scoring-api",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

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
