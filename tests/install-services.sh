#!/bin/sh
# Installs what the tests start themselves (on loopback, in temp dirs): Debian's PostgreSQL
# server, and Debian's Chromium for the browser tests (driven by Playwright, which must not
# download a browser of its own). Run by `make test`; does nothing when both are installed.
set -e
missing=""
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    missing="postgresql"
fi
if [ ! -x /usr/bin/chromium ]; then
    missing="$missing chromium"
fi
[ -n "$missing" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing:$missing; run 'apt-get install$missing' as root" >&2
    exit 1
fi
case "$missing" in
    postgresql*)
        # the package's own cluster is not used (the tests make their own): don't create one
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main.conf
        ;;
esac
apt-get update -q
# shellcheck disable=SC2086  # one word per package
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
