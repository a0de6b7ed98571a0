#!/usr/bin/env bash
# SCRAM-SHA-512 users and Kafka ACLs of one federation: one principal per participant, each
# allowed exactly what fraudfl needs (docs/operations.md, "Kafka principals"):
#   aggregator  Read   <p>to-aggregator
#               Write  <p>control, <p>models, every inbox (prefix <p>bank.)
#               Create and Describe on the federation's prefix (it creates missing topics)
#   bank B      Read   <p>control, <p>models, <p>bank.B (its own inbox only)
#               Write  <p>to-aggregator
#               Describe on the federation's prefix
# where <p> = fraudfl.<federation>. Nobody may Delete or Alter a topic, and no consumer-group
# ACLs are needed (fraudfl assigns partitions itself).
#   FEDERATION=consortium AGGREGATOR=aggregator BANKS="bank_00 bank_01" SECRETS=DIR \
#       create-acls.sh BOOTSTRAP ADMIN_CLIENT_PROPERTIES
# SECRETS holds <participant>.env files with FRAUDFL_KAFKA__SASL_PLAIN_PASSWORD (make-secrets.sh).
# Idempotent: users are upserted, ACLs added again are no-ops.
set -euo pipefail

bootstrap="${1:?usage: create-acls.sh BOOTSTRAP ADMIN_CLIENT_PROPERTIES}"
client_config="${2:?usage: create-acls.sh BOOTSTRAP ADMIN_CLIENT_PROPERTIES}"
federation="${FEDERATION:?set FEDERATION}"
aggregator="${AGGREGATOR:-aggregator}"
banks="${BANKS:?set BANKS (space-separated bank ids)}"
secrets="${SECRETS:?set SECRETS (the directory make-secrets.sh wrote)}"
kafka_acls="${KAFKA_ACLS:-/opt/kafka/bin/kafka-acls.sh}"
kafka_configs="${KAFKA_CONFIGS:-/opt/kafka/bin/kafka-configs.sh}"
prefix="fraudfl.${federation}."
common=(--bootstrap-server "$bootstrap" --command-config "$client_config")

password_of() {
  local line
  line="$(grep '^FRAUDFL_KAFKA__SASL_PLAIN_PASSWORD=' "$secrets/$1.env")" || {
    echo "create-acls.sh: no password for $1 in $secrets/$1.env" >&2; exit 1; }
  printf '%s' "${line#*=}"
}

user() {
  # The password goes to the broker only; it is never printed.
  "$kafka_configs" "${common[@]}" --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$(password_of "$1")]" >/dev/null
}

allow() {  # principal operation topic [prefixed]
  local pattern=(--resource-pattern-type literal)
  [[ "${4:-}" == prefixed ]] && pattern=(--resource-pattern-type prefixed)
  "$kafka_acls" "${common[@]}" --add --allow-principal "User:$1" --operation "$2" \
    --topic "$3" "${pattern[@]}" >/dev/null
}

user "$aggregator"
allow "$aggregator" Read "${prefix}to-aggregator"
allow "$aggregator" Write "${prefix}control"
allow "$aggregator" Write "${prefix}models"
allow "$aggregator" Write "${prefix}bank." prefixed
allow "$aggregator" Describe "$prefix" prefixed
allow "$aggregator" Create "$prefix" prefixed

for bank in $banks; do
  user "$bank"
  allow "$bank" Read "${prefix}control"
  allow "$bank" Read "${prefix}models"
  allow "$bank" Read "${prefix}bank.${bank}"
  allow "$bank" Write "${prefix}to-aggregator"
  allow "$bank" Describe "$prefix" prefixed
done
echo "SCRAM users and ACLs set for ${aggregator} and ${banks}"
