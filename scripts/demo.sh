#!/usr/bin/env bash
# The main job end to end on the embedded default: local Docker, real Debian kernel headers from a
# local mirror on 127.0.0.1, the example drivers built as module and probe, site/ published and served.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO="$ROOT/.demo"
MIRROR_PORT=${REPOGEN_DEMO_MIRROR_PORT:-8099}
SITE_PORT=${REPOGEN_DEMO_SITE_PORT:-8093}
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
mkdir -p "$DEMO"

# (Re)start a background process by pid file, so running the demo twice is fine.
restart() {
    local name=$1; shift
    local pidfile="$DEMO/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then kill "$(cat "$pidfile")" || true; sleep 0.5; fi
    nohup "$@" >"$DEMO/$name.log" 2>&1 &
    echo $! >"$pidfile"
}
wait_http() {  # URL NAME: the server NAME we started answers (not something else on that port)
    for _ in $(seq 1 50); do
        if ! kill -0 "$(cat "$DEMO/$2.pid")" 2>/dev/null; then
            echo "$2 exited (port in use?): $(tail -n 3 "$DEMO/$2.log")" >&2; return 1
        fi
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "no answer from $1" >&2; return 1
}

log "fetching real Debian kernel headers through apt into a local mirror"
python3 scripts/debian_headers.py --count 3 --dest "$DEMO/mirror" --base-url "http://127.0.0.1:$MIRROR_PORT" \
    --kernels-out examples/kernels.d/debian-demo.yaml
restart mirror python3 -m http.server --bind 127.0.0.1 --directory "$DEMO/mirror" "$MIRROR_PORT"
wait_http "http://127.0.0.1:$MIRROR_PORT/" mirror

if [ ! -f "$DEMO/signing-key.asc" ]; then
    log "making a demo signing key (a real deployment names its own: signing: in kernels.yaml)"
    mkdir -p "$DEMO/gnupg" && chmod 700 "$DEMO/gnupg"
    gpg --batch --homedir "$DEMO/gnupg" --pinentry-mode loopback --passphrase '' \
        --quick-gen-key "repogen demo <demo@repogen.invalid>" ed25519 sign never 2>/dev/null
    gpg --batch --homedir "$DEMO/gnupg" --armor --export-secret-keys >"$DEMO/signing-key.asc.tmp"
    mv "$DEMO/signing-key.asc.tmp" "$DEMO/signing-key.asc"
    gpgconf --homedir "$DEMO/gnupg" --kill gpg-agent || true
fi
SIGN=()
[ -f "$DEMO/signing-key.asc" ] && SIGN=(--sign-key-file "$DEMO/signing-key.asc")

log "repogen validate / plan / build"
repogen -c examples/kernels.yaml validate
repogen -c examples/kernels.yaml plan
repogen -c examples/kernels.yaml build
log "repogen publish (drivers, plus stand-in Falco .deb/.rpm packages for the APT and RPM repositories)"
scripts/example-packages.sh "$DEMO/packages" "$DEMO/gnupg" >/dev/null
gpgconf --homedir "$DEMO/gnupg" --kill gpg-agent 2>/dev/null || true
repogen -c examples/kernels.yaml publish --site site "${SIGN[@]}" \
    --deb "$DEMO/packages/*.deb" --rpm "$DEMO/packages/*.rpm" --base-url "http://127.0.0.1:$SITE_PORT"
restart serve repogen serve --site site --port "$SITE_PORT"
wait_http "http://127.0.0.1:$SITE_PORT/index.json" serve

# Fetch one driver the way falcoctl does ('+' escaped as %2B) and check it against index.json.
python3 - "$SITE_PORT" <<'PY'
import hashlib, json, sys, urllib.parse, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
index = json.load(urllib.request.urlopen(f"{base}/index.json"))
entry = next(a for a in index["artifacts"] if a["kind"] == "kmod" and a["name"] == "falco")
url = f"{base}/" + urllib.parse.quote(entry["path"], safe="/")
data = urllib.request.urlopen(url).read()
assert hashlib.sha256(data).hexdigest() == entry["sha256"], "checksum mismatch"
print(f"fetched {url} ({len(data)} bytes, sha256 ok)")
print(f"{len(index['artifacts'])} artifacts published; serving on {base}/ (pid in .demo/serve.pid)")
print(f"point Falco at it: FALCOCTL_DRIVER_REPOS={base}/driver")
PY
log "left running: the headers mirror (127.0.0.1:$MIRROR_PORT) and repogen serve (127.0.0.1:$SITE_PORT)"
echo "stop them: kill \$(cat .demo/mirror.pid .demo/serve.pid); clean up: README, 'What the demo leaves behind'" >&2
