"""The scoring API as deployed: HTTPS (and mutual TLS) with bearer tokens, and request limits
that answer fast with bounded bodies; a real uvicorn server, a real httpx client and a
certificate generated for the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fraudfl.config import ScoringLimits, ServerTLSSettings
from fraudfl.scoring import ModelHolder
from fraudfl.scoring.api import create_app
from fraudfl.scoring.records import MAX_REPORTED_ERRORS
from fraudfl.scoring.server import ServerThread
from tests.scoring.conftest import TrainedBank, transactions

TOKEN = "s3cr3t-token-for-tests-0123456789"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey,
           issuer: str, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test-ca", ca_key, ca_key, "test-ca", ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(
        _issue("127.0.0.1", server_key, ca_key, "test-ca", server=True).public_bytes(pem))
    (d / "client.pem").write_bytes(_issue("bank-fraud-team", client_key, ca_key,
                                          "test-ca").public_bytes(pem))
    return Pki(d / "ca.pem", d / "server.pem", _write_key(server_key, d / "server.key"),
               d / "client.pem", _write_key(client_key, d / "client.key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_https_with_bearer_token(artifact_dir: Path, trained_bank: TrainedBank,
                                 pki: Pki) -> None:
    app = create_app(ModelHolder(artifact_dir), tokens=[TOKEN])
    tls = ServerTLSSettings(certfile=pki.server_cert, keyfile=pki.server_key)
    with ServerThread(app, tls=tls) as server:
        assert server.url.startswith("https://")
        one = transactions(trained_bank, 1)[0]
        with httpx.Client(base_url=server.url, verify=str(pki.ca), timeout=10) as c:
            r = c.post("/score", json=one)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert c.get("/model").status_code == 401
            wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
            assert c.post("/score", json=one, headers=wrong).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = c.post("/score", json=one, headers=auth)
            assert r.status_code == 200 and 0 <= r.json()["probability"] <= 1
            assert c.get("/model", headers=auth).json()["version"] == 1
            # Probes and Prometheus need no token.
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").json() == {"ready": True, "model_version": 1}
        # Plain HTTP to the TLS port, and a client that does not trust the CA, both fail.
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url.replace("https", "http") + "/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz", timeout=5)  # system CAs only


def test_mutual_tls_requires_a_client_certificate(artifact_dir: Path, pki: Pki) -> None:
    tls = ServerTLSSettings(certfile=pki.server_cert, keyfile=pki.server_key,
                            client_cafile=pki.ca)
    with ServerThread(create_app(ModelHolder(artifact_dir)), tls=tls) as server:
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url + "/model", verify=str(pki.ca), timeout=5)
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        r = httpx.get(server.url + "/model", verify=ctx, timeout=5)
        assert r.status_code == 200


def test_hostile_bodies_are_answered_fast_and_small(artifact_dir: Path,
                                                    trained_bank: TrainedBank) -> None:
    limits = ScoringLimits(max_body_bytes=1024 * 1024, max_batch=100_000)
    with ServerThread(create_app(ModelHolder(artifact_dir), limits=limits)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        empties = b"[" + b",".join([b"{}"] * 100_000) + b"]"  # ~300 kB of 100k empty objects
        assert 290_000 < len(empties) < 310_000
        started = time.perf_counter()
        r = c.post("/score", content=empties, headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - started
        assert r.status_code == 422
        assert elapsed < 1.0, f"{elapsed:.2f} s"
        assert len(r.content) < 8_192
        body = r.json()
        assert len(body["detail"]) == MAX_REPORTED_ERRORS
        assert body["detail"][0]["index"] == 0 and "more)" in body["error"]

        # The same body against a batch limit: 413 before any transaction is validated.
        small = ScoringLimits(max_batch=1_000)
        with ServerThread(create_app(ModelHolder(artifact_dir), limits=small)) as limited:
            r = httpx.post(limited.url + "/score", content=empties, timeout=30,
                           headers={"content-type": "application/json"})
            assert r.status_code == 413 and "at most 1000" in r.json()["error"]

        # An invalid transaction deep in a large valid batch is found and named.
        batch = transactions(trained_bank, 600)
        batch[555]["amount"] = "lots"
        r = c.post("/score", json=batch)
        assert r.status_code == 422
        assert r.json()["detail"][0] == {"field": "amount", "index": 555,
                                         "message": r.json()["detail"][0]["message"]}
        big = json.dumps(transactions(trained_bank, 10)).encode() * 20_000
        r = c.post("/score", content=big[: 2 * 1024 * 1024],
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and len(r.content) < 1_024


def test_request_time_limit_answers_503(artifact_dir: Path, trained_bank: TrainedBank) -> None:
    limits = ScoringLimits(request_timeout_s=0.001, max_batch=100_000)
    with ServerThread(create_app(ModelHolder(artifact_dir), limits=limits)) as server:
        batch = json.dumps(transactions(trained_bank, 2_000) * 10).encode()
        r = httpx.post(server.url + "/score", content=batch, timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 503 and "not scored within" in r.json()["error"]
