#!/usr/bin/env bash
# Debian packages the test suite drives for real:
#   poppler-utils  renders PDF reports to PNG (pdftoppm)
#   postgresql     a real PostgreSQL server that the database tests start on loopback
set -euo pipefail
needed=()
command -v pdftoppm >/dev/null 2>&1 || needed+=(poppler-utils)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || needed+=(postgresql)
if [ ${#needed[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${needed[*]}; install them with: sudo apt-get install ${needed[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${needed[@]}"
