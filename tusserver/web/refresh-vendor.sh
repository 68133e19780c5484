#!/bin/sh
# Refreshes tusserver/web/vendor/ from Uppy's published npm package (the `uppy` bundle: ES
# module + CSS, every plugin included). Needs Node's npm, only here: installing and running the
# server never does. Usage: sh tusserver/web/refresh-vendor.sh [VERSION]  (default: the one in
# vendor/VERSION). It takes the tarball with `npm pack`, checks it against the registry's
# integrity hash (and, for the pinned version, the hash recorded in vendor/VERSION), copies
# dist/uppy.min.mjs, dist/uppy.min.css and the licence, and rewrites vendor/VERSION. Source maps
# are left out: they are four times the size of the code and not needed to run it.
set -eu
vendor="$(cd "$(dirname "$0")" && pwd)/vendor"
recorded_version=$(sed -n 's/^version=//p' "$vendor/VERSION")
recorded_integrity=$(sed -n 's/^integrity=//p' "$vendor/VERSION")
version="${1:-$recorded_version}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "uppy@$version" >/dev/null
tarball="uppy-$version.tgz"
published=$(npm view "uppy@$version" dist.integrity)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$published" ]; then
    echo "uppy@$version: tarball hash $actual is not the published $published" >&2
    exit 1
fi
if [ "$version" = "$recorded_version" ] && [ "$actual" != "$recorded_integrity" ]; then
    echo "uppy@$version: tarball hash $actual differs from vendor/VERSION's" >&2
    exit 1
fi
tar -xzf "$tarball"
cp package/dist/uppy.min.mjs package/dist/uppy.min.css "$vendor/"
cp package/LICENSE "$vendor/LICENSE"
licence=$(npm view "uppy@$version" license)
cat > "$vendor/VERSION" <<EOF
package=uppy
version=$version
license=$licence
integrity=$actual
files=dist/uppy.min.mjs dist/uppy.min.css LICENSE
EOF
echo "vendor/ now holds uppy@$version ($licence)"
