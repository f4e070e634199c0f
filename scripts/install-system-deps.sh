#!/usr/bin/env bash
# Debian packages the service needs (with --service, only these; make run installs them):
#   fonts-wqy-microhei  the font the PDF reports set Chinese, Japanese and Korean names in (the
#                  service does not start without it; its other fonts come with matplotlib)
# and those the test suite drives for real (make test installs them all):
#   poppler-utils  renders PDF reports to PNG (pdftoppm)
#   postgresql     a real PostgreSQL server that the database tests start on loopback
#   chromium       the browser that the web-page tests drive through Playwright
#   docker-compose checks docker-compose.yml (no Docker engine needed for 'config')
#   orthanc, orthanc-dicomweb  the DICOM archive of the compose stack, started by the deployment tests
#   redis-server   the broker of the study job queue (Celery), started by the queue tests
set -euo pipefail
needed=()
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || needed+=(fonts-wqy-microhei)
if [ "${1:-}" != "--service" ]; then
  command -v pdftoppm >/dev/null 2>&1 || needed+=(poppler-utils)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || needed+=(postgresql)
  command -v chromium >/dev/null 2>&1 || needed+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || needed+=(docker-compose)
  command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || needed+=(orthanc)
  ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* >/dev/null 2>&1 || needed+=(orthanc-dicomweb)
  command -v redis-server >/dev/null 2>&1 || needed+=(redis-server)
fi
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
# The tests start their own Orthanc and Redis on loopback; the packages' system services are not needed.
if [[ " ${needed[*]} " == *" orthanc "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
if [[ " ${needed[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
