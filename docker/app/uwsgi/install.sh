#!/bin/sh
# Installs uWSGI, the server, into the virtualenv whose pip is given (default: pip on PATH):
# the release pinned (with its hash) in requirements.txt beside this script, built from
# its source with the patches here applied. The image (docker/app/Dockerfile*) and the
# host's `make install` both run it, so the tests serve with the uWSGI the image has.
#
#   sh docker/app/uwsgi/install.sh [PIP]
#
# The patches (tests/system/test_uwsgi_patches.py tests each on a bare uWSGI):
# - http-headers-deadline.patch adds the HTTP router option of that name (a deadline for
#   a request's whole head, answered 408), which uWSGI 2.0 lacks: its http-headers-timeout
#   restarts at every byte, so a head sent a byte a second held a connection for hours.
#   uwsgi.ini sets it, and `strict` makes an unpatched uWSGI refuse to start rather than
#   run without it.
# - http-to-bodyless.patch adds the HTTP router option http-to-bodyless: a request
#   without a body (no Content-Length, not chunked) goes to that node, straight to the
#   workers, instead of through the fastrouter that buffers bodies (uwsgi.ini).
# - memory-from-statm.patch: the memory that reload-on-rss checks after every request is
#   read from /proc/self/statm, not /proc/self/stat (whose CPU times cost a busy worker
#   about 20 % of its speed on the benchmark's VM: docs/performance.md).
# Needs a C compiler, the Python headers and patch.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
pip=${1:-pip}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --require-hashes: the source is the one whose hash is pinned, or nothing installs.
"$pip" download --quiet --disable-pip-version-check --no-deps --no-binary uWSGI \
    --require-hashes -r "$here/requirements.txt" -d "$work"
tar -xzf "$work"/uwsgi-*.tar.gz -C "$work"
source_dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'uwsgi-*')
for patch_file in "$here"/*.patch; do
    (cd "$source_dir" && patch -p1 -i "$patch_file")
done
# --no-cache-dir: a wheel built from patched source must not be cached under the
# release's name, where a plain `pip install uWSGI==...` could later pick it up.
"$pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps "$source_dir"
