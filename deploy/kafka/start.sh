#!/bin/sh
# Kafka in deploy/compose.yaml: one KRaft node (broker and controller) as docs/kafka.md describes it.
# Clients and the broker itself authenticate with SASL/SCRAM-SHA-512; authorization is deny by
# default (StandardAuthorizer), so aiond can do only what its ACLs grant (made by kafka-setup).
# SCRAM credentials live in the metadata log, which the controller cannot read before it runs, so the
# controller's own listener, on the container's loopback only, uses SASL/PLAIN.
#
# The log directory is formatted once, on the first start, with the admin and aiond SCRAM users;
# later starts reuse it. Passwords come from the compose secrets (deploy/dev-secrets.sh).
set -eu
umask 077

# The image's layout and the compose network's names; each may be set (the tests run this script
# outside a container, on free ports).
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
DATA=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
CONF=${KAFKA_CONF_DIR:-/tmp/aion-kafka}
SECRETS=${KAFKA_SECRETS_DIR:-/run/secrets}
LISTEN=${KAFKA_LISTEN_HOST:-}
HOST=${KAFKA_ADVERTISED_HOST:-kafka}
BROKER_PORT=${KAFKA_BROKER_PORT:-9092}
EXTERNAL_PORT=${KAFKA_EXTERNAL_PORT:-19092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}

secret() {
  value=$(cat "$SECRETS/$1")
  # --add-scram and the JAAS lines quote nothing: keep to what dev-secrets.sh writes.
  case "$value" in
    ''|*[!A-Za-z0-9_-]*) echo "kafka: $SECRETS/$1 must hold letters, digits, '-' or '_' only" >&2; exit 1 ;;
  esac
  printf '%s' "$value"
}

admin=$(secret kafka_admin_password)
aiond=$(secret kafka_aiond_password)
controller=$(secret kafka_controller_password)

mkdir -p "$CONF"
cat > "$CONF/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:$CONTROLLER_PORT
listeners=BROKER://$LISTEN:$BROKER_PORT,EXTERNAL://$LISTEN:$EXTERNAL_PORT,CONTROLLER://localhost:$CONTROLLER_PORT
advertised.listeners=BROKER://$HOST:$BROKER_PORT,EXTERNAL://localhost:$EXTERNAL_PORT
listener.security.protocol.map=BROKER:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=BROKER
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$controller" user_controller="$controller";
listener.name.broker.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
listener.name.external.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:controller
allow.everyone.if.no.acl.found=false
auto.create.topics.enable=false
log.dirs=$DATA
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES

# What the healthcheck (and an operator in the container) connects with.
cat > "$CONF/admin.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
PROPERTIES

if [ ! -f "$DATA/meta.properties" ]; then
  "$KAFKA_HOME/bin/kafka-storage.sh" format \
    --config "$CONF/server.properties" \
    --cluster-id "$("$KAFKA_HOME/bin/kafka-storage.sh" random-uuid)" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin]" \
    --add-scram "SCRAM-SHA-512=[name=aiond,password=$aiond]"
fi
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$CONF/server.properties"
