#!/bin/sh
# Run by the postgres image once, when it creates the primary's database
# (deploy/compose.yaml): the replicas connect for replication as the
# seawall user, with its password.
echo "host replication seawall all scram-sha-256" >>"$PGDATA/pg_hba.conf"
