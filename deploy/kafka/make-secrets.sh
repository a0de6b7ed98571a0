#!/usr/bin/env bash
# TLS and SASL material for the SASL_SSL overlay (deploy/docker-compose.sasl-ssl.yml):
#   deploy/kafka/make-secrets.sh deploy/kafka/secrets aggregator bank_00 bank_01 bank_02
#
# OUTDIR receives what the broker and the clients mount:
#   ca.crt                       the CA certificate: fraudfl's kafka.ssl_cafile
#   kafka.keystore.p12           broker key + certificate chain (SAN kafka, localhost)
#   kafka.truststore.p12         the CA, for the broker and the Kafka CLI tools
#   keystore_creds, truststore_creds   store passwords (the apache/kafka image reads these files)
#   broker_jaas.conf             SASL/PLAIN user admin (inter-broker, topic and ACL admin) only;
#                                participants are SCRAM-SHA-512 users (create-acls.sh)
#   admin.properties             client config for kafka-topics.sh/kafka-acls.sh over SASL_SSL
#   <participant>.env            FRAUDFL_KAFKA__SASL_PLAIN_USERNAME/PASSWORD for docker compose
# The CA private key goes to OUTDIR.ca/ (never mounted anywhere). Needs openssl and keytool
# (a JDK, or run it inside the apache/kafka image). Refuses to overwrite an existing OUTDIR.
# Every file but ca.crt is 0600: run as root and the broker's files are given to its uid
# (BROKER_UID, default 1000: appuser of the apache/kafka image); otherwise chown them yourself.
set -euo pipefail

out="${1:?usage: make-secrets.sh OUTDIR PARTICIPANT...}"
shift
participants=("$@")
if [[ ${#participants[@]} -eq 0 ]]; then
  echo "make-secrets.sh: name at least one participant (e.g. aggregator bank_00)" >&2
  exit 2
fi
for p in "${participants[@]}"; do
  if [[ ! "$p" =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
    echo "make-secrets.sh: participant id '$p' must be 1-64 of [A-Za-z0-9_-]" >&2
    exit 2
  fi
done
if [[ -e "$out" || -e "$out.ca" ]]; then
  echo "make-secrets.sh: $out or $out.ca already exists; refusing to overwrite" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "make-secrets.sh: openssl not found" >&2; exit 1; }
command -v keytool >/dev/null || { echo "make-secrets.sh: keytool not found (install a JDK)" >&2; exit 1; }

umask 077
mkdir -p "$out" "$out.ca"
ca="$out.ca"
days="${DAYS:-825}"
secret() { openssl rand -hex 24; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes -days "$days" \
  -subj "/CN=fraudfl Kafka CA" -keyout "$ca/ca.key" -out "$out/ca.crt" 2>/dev/null

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -nodes -subj "/CN=kafka" \
  -keyout "$ca/broker.key" -out "$ca/broker.csr" 2>/dev/null
printf 'subjectAltName=DNS:kafka,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
  > "$ca/broker.ext"
openssl x509 -req -sha256 -days "$days" -in "$ca/broker.csr" -CA "$out/ca.crt" \
  -CAkey "$ca/ca.key" -CAcreateserial -CAserial "$ca/ca.srl" -extfile "$ca/broker.ext" -out "$ca/broker.crt" 2>/dev/null

keystore_pw="$(secret)"
truststore_pw="$(secret)"
printf '%s' "$keystore_pw" > "$out/keystore_creds"
printf '%s' "$truststore_pw" > "$out/truststore_creds"
openssl pkcs12 -export -name kafka -in "$ca/broker.crt" -inkey "$ca/broker.key" \
  -certfile "$out/ca.crt" -passout "file:$out/keystore_creds" -out "$out/kafka.keystore.p12"
keytool -importcert -noprompt -alias fraudfl-ca -file "$out/ca.crt" \
  -keystore "$out/kafka.truststore.p12" -storetype PKCS12 \
  -storepass:file "$out/truststore_creds" >/dev/null 2>&1

admin_pw="$(secret)"
{
  echo "KafkaServer {"
  echo "    org.apache.kafka.common.security.plain.PlainLoginModule required"
  echo "    username=\"admin\""
  echo "    password=\"$admin_pw\""
  echo "    user_admin=\"$admin_pw\";"
  echo "    org.apache.kafka.common.security.scram.ScramLoginModule required;"
  echo "};"
} > "$out/broker_jaas.conf"
for p in "${participants[@]}"; do
  printf 'FRAUDFL_KAFKA__SASL_PLAIN_USERNAME=%s\nFRAUDFL_KAFKA__SASL_PLAIN_PASSWORD=%s\n' \
    "$p" "$(secret)" > "$out/$p.env"
done

cat > "$out/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_pw";
ssl.truststore.location=/etc/kafka/secrets/kafka.truststore.p12
ssl.truststore.type=PKCS12
ssl.truststore.password=$truststore_pw
PROPS

# Secrets stay private (umask 077 made them 0600); only the CA certificate is public.
chmod 0600 "$out"/*
chmod 0644 "$out/ca.crt"
chmod 0711 "$out"
broker_uid="${BROKER_UID:-1000}"
broker_files=(kafka.keystore.p12 kafka.truststore.p12 keystore_creds truststore_creds
              broker_jaas.conf admin.properties)
if [[ "$(id -u)" == 0 ]]; then
  # The broker and the ACL job (kafka-init) run as the image's appuser; the participants'
  # .env files are read by docker compose on the host and by the ACL job.
  for f in "${broker_files[@]}" "${participants[@]/%/.env}"; do
    chown "$broker_uid" "$out/$f"
  done
else
  echo "make-secrets.sh: not root; give the broker its files: sudo chown $broker_uid" \
    "$out/{$(IFS=,; echo "${broker_files[*]}")} $out/*.env" >&2
fi
echo "wrote $out (mount read-only into the broker) and $out.ca (CA key: keep offline)"
