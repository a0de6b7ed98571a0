from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from fraudfl.transport.kafka import KafkaSettings


def test_options_follow_the_broker_notes() -> None:
    s = KafkaSettings(bootstrap_servers="a:9092,b:9092")
    producer, consumer = s.producer(), s.consumer()
    assert producer["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert producer["acks"] == "all" and producer["enable_idempotence"] is False
    assert producer["max_request_size"] >= 2 * s.max_message_bytes
    assert consumer["group_id"] is None and consumer["enable_auto_commit"] is False
    assert consumer["auto_offset_reset"] == "earliest"
    assert consumer["allow_auto_create_topics"] is False
    assert "ssl_cafile" not in consumer and "sasl_mechanism" not in consumer
    # Tansu does not answer a held empty fetch when data arrives: hold it briefly.
    assert consumer["fetch_min_bytes"] == 1 and consumer["fetch_max_wait_ms"] == 100
    assert KafkaSettings("a:9092", fetch_max_wait_ms=5).consumer()["fetch_max_wait_ms"] == 5


def test_tls_and_sasl_pass_through() -> None:
    s = KafkaSettings(
        bootstrap_servers="kafka:9093",
        security_protocol="SASL_SSL",
        ssl_cafile=Path("/etc/ca.pem"),
        ssl_certfile="/etc/client.pem",
        ssl_keyfile="/etc/client.key",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="bank-a",
        sasl_plain_password="secret",
        compression="lz4",
    )
    for opts in (s.producer(), s.consumer(), s.admin()):
        assert opts["security_protocol"] == "SASL_SSL"
        assert opts["ssl_cafile"] == "/etc/ca.pem" and opts["ssl_keyfile"] == "/etc/client.key"
        assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
        assert opts["sasl_plain_password"] == "secret"
    assert s.producer()["compression_type"] == "lz4"
    assert "secret" not in repr(s)


def test_every_option_is_known_to_kafka_python() -> None:
    s = KafkaSettings(
        bootstrap_servers="x:1",
        security_protocol="SASL_SSL",
        ssl_cafile="/ca",
        sasl_mechanism="PLAIN",
        sasl_plain_username="u",
        sasl_plain_password="p",
    )
    assert set(s.producer()) <= set(KafkaProducer.DEFAULT_CONFIG)
    assert set(s.consumer()) <= set(KafkaConsumer.DEFAULT_CONFIG)
    assert set(s.admin()) <= set(KafkaAdminClient.DEFAULT_CONFIG)


def test_converts_from_the_config_section() -> None:
    from fraudfl.config import KafkaSettings as ConfigKafka

    section = ConfigKafka(bootstrap_servers="k:9092", client_id="bank-a", max_message_bytes=500_000)
    settings = section.transport_settings()
    assert settings.bootstrap_servers == "k:9092" and settings.max_message_bytes == 500_000
    assert settings.common()["client_id"] == "bank-a"


def test_secrets_unwrapped_only_for_the_client() -> None:
    from fraudfl.config import KafkaSettings as ConfigKafka

    section = ConfigKafka.model_validate({
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "bank-a", "sasl_plain_password": "12345",
        "ssl_keyfile": "/k.pem", "ssl_password": "key-pass",
    })
    assert "12345" not in repr(section) and "key-pass" not in str(section.model_dump())
    opts = section.transport_settings().producer()
    assert opts["sasl_plain_password"] == "12345" and opts["ssl_password"] == "key-pass"
    assert "12345" not in repr(section.transport_settings())


def test_kerberos_and_oauthbearer_pass_through(tmp_path: Path) -> None:
    kerberos = KafkaSettings(
        bootstrap_servers="k:9093", security_protocol="SASL_SSL", sasl_mechanism="GSSAPI",
        sasl_kerberos_service_name="kafka-prod", sasl_kerberos_domain_name="bank.example",
    )
    opts = kerberos.consumer()
    assert opts["sasl_kerberos_service_name"] == "kafka-prod"
    assert opts["sasl_kerberos_domain_name"] == "bank.example"
    assert "sasl_plain_password" not in opts
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.first\n")
    oauth = KafkaSettings(
        bootstrap_servers="k:9093", security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_file=token,
    )
    provider = oauth.producer()["sasl_oauth_token_provider"]
    assert provider.token() == "eyJhbGciOi.first"
    token.write_text("eyJhbGciOi.refreshed")
    assert provider.token() == "eyJhbGciOi.refreshed"  # re-read: a sidecar refreshes it
    for s in (kerberos, oauth):
        assert set(s.producer()) <= set(KafkaProducer.DEFAULT_CONFIG)
        assert set(s.consumer()) <= set(KafkaConsumer.DEFAULT_CONFIG)
