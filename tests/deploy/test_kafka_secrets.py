"""deploy/kafka/make-secrets.sh: the TLS material verifies as kafka-python will use it."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/kafka/make-secrets.sh"


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [tool for tool in ("openssl", "keytool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: make-secrets.sh cannot run")
    out = tmp_path_factory.mktemp("kafka") / "secrets"
    subprocess.run(
        ["bash", str(SCRIPT), str(out), "aggregator", "bank_00"],
        check=True, capture_output=True, timeout=120,
    )
    return out


def test_files_and_permissions(secrets_dir: Path) -> None:
    names = {p.name for p in secrets_dir.iterdir()}
    assert names == {
        "ca.crt", "kafka.keystore.p12", "kafka.truststore.p12", "keystore_creds",
        "truststore_creds", "broker_jaas.conf", "admin.properties", "aggregator.env",
        "bank_00.env",
    }
    # The CA key never lands in the directory the broker mounts.
    assert (secrets_dir.parent / "secrets.ca/ca.key").stat().st_mode & 0o077 == 0
    # Nothing but the CA certificate is readable by anyone else.
    for path in secrets_dir.iterdir():
        mode = path.stat().st_mode & 0o777
        assert mode == (0o644 if path.name == "ca.crt" else 0o600), (path.name, oct(mode))
    env = dict(
        line.split("=", 1) for line in (secrets_dir / "bank_00.env").read_text().splitlines()
    )
    assert env["FRAUDFL_KAFKA__SASL_PLAIN_USERNAME"] == "bank_00"
    password = env["FRAUDFL_KAFKA__SASL_PLAIN_PASSWORD"]
    assert len(password) == 48
    jaas = (secrets_dir / "broker_jaas.conf").read_text()
    # Participants are SCRAM users (create-acls.sh), not PLAIN users in the broker's JAAS file.
    assert password not in jaas and "user_bank_00" not in jaas
    assert 'user_admin="' in jaas and "ScramLoginModule required;" in jaas


def test_refuses_to_overwrite(secrets_dir: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), str(secrets_dir), "aggregator"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr


def test_rejects_bad_participant_ids(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "s"), "bank 1"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "participant id 'bank 1'" in result.stderr


def test_broker_keystore_serves_tls_that_the_ca_file_verifies(
    secrets_dir: Path, tmp_path: Path
) -> None:
    password = (secrets_dir / "keystore_creds").read_bytes()
    key, cert, chain = pkcs12.load_key_and_certificates(
        (secrets_dir / "kafka.keystore.p12").read_bytes(), password
    )
    assert key is not None and cert is not None and chain
    pem = tmp_path / "broker.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pem)
    # What kafka-python builds from security_protocol SSL/SASL_SSL + ssl_cafile +
    # ssl_check_hostname: a default context trusting only the CA file.
    client_ctx = ssl.create_default_context(cafile=str(secrets_dir / "ca.crt"))

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="kafka") as tls:
            assert tls.recv(2) == b"ok"
        thread.join(timeout=10)

    # The certificate names only the broker's hosts: another name fails verification.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_once() -> None:
            conn, _ = listener.accept()
            try:
                server_ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        thread = threading.Thread(target=serve_once, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                pytest.raises(ssl.SSLCertVerificationError):
            client_ctx.wrap_socket(raw, server_hostname="evil.example")
        thread.join(timeout=10)


def test_truststore_holds_the_ca(secrets_dir: Path) -> None:
    result = subprocess.run(
        [
            "keytool", "-list", "-keystore", str(secrets_dir / "kafka.truststore.p12"),
            "-storetype", "PKCS12", "-storepass:file", str(secrets_dir / "truststore_creds"),
        ],
        capture_output=True, text=True, check=True,
    )
    assert "fraudfl-ca, " in result.stdout and "trustedCertEntry" in result.stdout
