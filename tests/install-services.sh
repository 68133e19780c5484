#!/bin/sh
# Installs the services the tests start themselves (on loopback, in temp dirs): Debian's
# PostgreSQL server. Run by `make test`; does nothing when they are already installed.
set -e
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL server missing: run 'apt-get install postgresql' as root" >&2
        exit 1
    fi
    # the package's own cluster is not used (the tests make their own): don't create one
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main.conf
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
fi
