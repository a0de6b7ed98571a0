#!/usr/bin/env bash
# Create the Kafka topics of one fraudfl federation (layout: fraudfl.transport.topics).
#   FEDERATION=consortium BANKS="bank_00 bank_01" create-topics.sh BOOTSTRAP [CLIENT_PROPERTIES]
# CLIENT_PROPERTIES is a kafka client config file for TLS/SASL listeners (admin credentials).
# Idempotent: existing topics are left as they are.
set -euo pipefail

bootstrap="${1:?usage: create-topics.sh BOOTSTRAP [CLIENT_PROPERTIES]}"
client_config="${2:-}"
federation="${FEDERATION:?set FEDERATION}"
banks="${BANKS:?set BANKS (space-separated bank ids)}"
replication="${REPLICATION_FACTOR:-1}"
to_aggregator_partitions="${TO_AGGREGATOR_PARTITIONS:-1}"
kafka_topics="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

args=(--bootstrap-server "$bootstrap")
if [[ -n "$client_config" ]]; then
  args+=(--command-config "$client_config")
fi

create() {
  local topic="$1" partitions="$2"
  "$kafka_topics" "${args[@]}" --create --if-not-exists --topic "$topic" \
    --partitions "$partitions" --replication-factor "$replication"
}

prefix="fraudfl.${federation}"
# Control broadcasts and global models are totally ordered: one partition each.
create "${prefix}.control" 1
create "${prefix}.models" 1
create "${prefix}.to-aggregator" "$to_aggregator_partitions"
for bank in $banks; do
  create "${prefix}.bank.${bank}" 1
done
"$kafka_topics" "${args[@]}" --list | grep "^${prefix}\." || true
