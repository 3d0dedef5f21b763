#!/usr/bin/env bash
# Start dockerd if it is not answering (no systemd needed), and wait until it does.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker || true
fi
if ! docker info >/dev/null 2>&1; then
    mkdir -p /var/log
    nohup dockerd --bridge=none --iptables=false >/var/log/repogen-dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "dockerd did not come up; see /var/log/repogen-dockerd.log" >&2
exit 1
