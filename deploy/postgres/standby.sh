#!/bin/bash
# The standby's entrypoint: on an empty volume, clone the primary with pg_basebackup
# (-R writes standby.signal and primary_conninfo, -C -S makes a replication slot so the
# primary keeps the WAL the standby still needs), then run PostgreSQL as a hot standby.
set -euo pipefail
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "$PRIMARY_HOST" -q; do sleep 1; done
  PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD" gosu postgres pg_basebackup \
    -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream -C -S "$REPLICATION_SLOT"
fi
exec gosu postgres postgres "$@"
