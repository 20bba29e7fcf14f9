#!/bin/sh
# Make the passwords deploy/compose.yaml reads, once: random, for the development stack only.
#
#   deploy/dev-secrets.sh [DIR]     # DIR defaults to deploy/secrets (git-ignored)
#
# An existing file is kept (Kafka's SCRAM users are made from them when its volume is first
# formatted, so changing one later needs `docker compose down -v`). Values are hex: safe in Kafka's
# properties and --add-scram without quoting.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 700 "$dir"
for name in kafka_admin_password kafka_aiond_password kafka_controller_password grafana_admin_password; do
  if [ ! -s "$dir/$name" ]; then
    # Readable by the containers' own users (they bind-mount the file); the directory keeps others out.
    (umask 022 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' > "$dir/$name.tmp" && mv "$dir/$name.tmp" "$dir/$name")
    echo "made $dir/$name"
  fi
done
