#!/usr/bin/env bash
# Create the ids-daemon topics (idempotent: --if-not-exists).
#
#   BOOTSTRAP=kafka:9092 PARTITIONS=12 RF=3 ./create-topics.sh
#
# ids.predictions         the daemon's predictions (record key: the flow key)
# ids.actions             actions taken by consumers (RL agents, responders)
# ids.predictions.dlq     predictions a consumer could not process
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
PARTITIONS="${PARTITIONS:-12}"
RF="${RF:-1}"
RETENTION_MS="${RETENTION_MS:-604800000}"          # 7 days
DLQ_RETENTION_MS="${DLQ_RETENTION_MS:-1209600000}" # 14 days
KAFKA_TOPICS="${KAFKA_TOPICS:-$(command -v kafka-topics.sh || echo /opt/kafka/bin/kafka-topics.sh)}"

create() {
    local topic="$1" partitions="$2" retention="$3"
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" --partitions "$partitions" --replication-factor "$RF" \
        --config retention.ms="$retention" \
        --config cleanup.policy=delete \
        --config compression.type=producer
}

# The broker may still be starting (compose starts this right after it).
for i in $(seq 1 30); do
    if "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1; then
        break
    fi
    echo "waiting for $BOOTSTRAP ($i)" >&2
    sleep 2
done

create ids.predictions "$PARTITIONS" "$RETENTION_MS"
create ids.actions "$PARTITIONS" "$RETENTION_MS"
create ids.predictions.dlq "$PARTITIONS" "$DLQ_RETENTION_MS"

"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --topic ids.predictions
