#!/usr/bin/env bash
# Install ids-daemon as a system service from this checkout.
#
#   sudo scripts/install.sh                   # venv in /opt/ids-daemon, unit, user, /etc/ids-daemon/config.yml
#   scripts/install.sh --dry-run              # print what it would do, change nothing
#   scripts/install.sh --prefix DIR           # install under DIR instead of / (staging, tests; no root needed)
#   scripts/install.sh --prefix DIR --no-venv # only the unit, sysusers/tmpfiles and config files
#   scripts/install.sh --extras train         # also the trainer's dependencies (ids-trainer train)
#
# Then: systemctl enable --now "$(systemd-escape --template ids-daemon@.service IFACE)"
# (one instance per interface; the instance is the escaped name, e.g. br-lan -> br\x2dlan).
# Safe to run again: the venv is updated, an existing /etc/ids-daemon/config.yml is kept.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
dry=0 prefix="" venv=1 extras=""

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }
                  prefix="$(realpath -m "$2")"; shift ;;
        --prefix=*) prefix="$(realpath -m "${1#--prefix=}")" ;;
        --no-venv) venv=0 ;;
        --extras) [ $# -ge 2 ] || { echo "install: --extras needs a value (e.g. train)" >&2; exit 2; }
                  extras="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ "$prefix" = "/" ] && prefix=""

if [ -z "$prefix" ] && [ "$dry" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install: run as root (or use --prefix DIR / --dry-run)" >&2
    exit 1
fi

OPT="$prefix/opt/ids-daemon"
BIN="$prefix/usr/local/bin"
UNITDIR="$prefix/etc/systemd/system"
SYSUSERS="$prefix/etc/sysusers.d"
TMPFILES="$prefix/etc/tmpfiles.d"
ETC="$prefix/etc/ids-daemon"

# Print each action; run it unless --dry-run.
run() {
    printf '+'; printf ' %q' "$@"; printf '\n'
    [ "$dry" = 1 ] || "$@"
}
say() { echo "install: $*"; }

# ---- the virtual environment with the package ---------------------------------------------
if [ "$venv" = 1 ]; then
    [ -x "$OPT/bin/python" ] || run "$PY" -m venv "$OPT"
    pip=("$OPT/bin/python" -m pip install -q --disable-pip-version-check)
    # torch as in scripts/setup.sh: the pinned CPU build without a GPU, the default
    # (CUDA) build with one; the package's range (torch>=2.2) keeps whichever is there.
    if [ "$dry" = 1 ] || ! "$OPT/bin/python" -c "import torch" 2>/dev/null; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            run "${pip[@]}" torch
        elif [ "$dry" = 1 ]; then
            run "${pip[@]}" "torch==2.13.0"
        else
            run "${pip[@]}" "torch==2.13.0" || run "${pip[@]}" torch
        fi
    fi
    spec="$REPO"
    [ -n "$extras" ] && spec="$REPO[$extras]"
    run "${pip[@]}" "$spec"
    # the unit's Documentation= points here
    run install -d -m 0755 "$OPT/docs"
    run install -m 0644 "$REPO/README.md" "$OPT/README.md"
    run cp -r "$REPO/docs/." "$OPT/docs/"
    run install -d -m 0755 "$BIN"
    run ln -sfn "$OPT/bin/ids-daemon" "$BIN/ids-daemon"
    run ln -sfn "$OPT/bin/ids-trainer" "$BIN/ids-trainer"
else
    say "skipping the virtual environment (--no-venv): $BIN/ids-daemon must exist for the unit to start"
fi

# ---- unit, user, directories ------------------------------------------------------------
run install -d -m 0755 "$UNITDIR" "$SYSUSERS" "$TMPFILES"
run install -m 0644 "$REPO/systemd/ids-daemon@.service" "$UNITDIR/ids-daemon@.service"
run install -m 0644 "$REPO/systemd/sysusers.d/ids-daemon.conf" "$SYSUSERS/ids-daemon.conf"
run install -m 0644 "$REPO/systemd/tmpfiles.d/ids-daemon.conf" "$TMPFILES/ids-daemon.conf"

# The user: systemd-sysusers reads the file just installed; without it, useradd.
# Under --prefix the user database of DIR is touched only through systemd-sysusers --root.
ownok=1  # chown needs root: a non-root --prefix install leaves the user and ownership out
[ "$(id -u)" = 0 ] || [ "$dry" = 1 ] || ownok=0
if [ "$ownok" = 0 ]; then
    say "not root: not creating the user ids-daemon under $prefix"
elif command -v systemd-sysusers >/dev/null; then
    run systemd-sysusers ${prefix:+--root="$prefix"} "$SYSUSERS/ids-daemon.conf"
elif [ -n "$prefix" ]; then
    say "no systemd-sysusers: not creating the user under $prefix"
elif ! getent passwd ids-daemon >/dev/null; then
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    run useradd --system --user-group --home-dir /var/lib/ids-daemon --no-create-home \
        --shell "$nologin" --comment "ids-daemon network IDS" ids-daemon
fi

# The configuration: shared by every instance; kept if present. The spool (kafka.spool_dir,
# relative by default) lands in each instance's working directory /var/lib/ids-daemon/IFACE.
run install -d -m 0750 "$ETC"
if [ -e "$ETC/config.yml" ]; then
    say "keeping $ETC/config.yml"
else
    say "config -> $ETC/config.yml"
    if [ "$dry" = 0 ]; then
        {
            echo "# Installed by scripts/install.sh for ids-daemon@IFACE.service (all instances)."
            echo "# Under systemd every instance runs in /var/lib/ids-daemon/IFACE, so the relative"
            echo "# kafka.spool_dir below gives each interface its own spool there. An absolute"
            echo "# spool_dir must lie under /var/lib/ids-daemon (the rest of the system is read-only"
            echo "# to the service) and must differ per instance. Predictions go to Kafka (set"
            echo "# kafka.bootstrap) unless IDS_DAEMON_SINK=\"--sink jsonl\" in /etc/ids-daemon/ids-daemon.env"
            echo "# sends them to the journal. A second instance needs its own metrics endpoint:"
            echo "# IDS_DAEMON_ARGS=\"--metrics-listen 127.0.0.1:9109\" in /etc/ids-daemon/IFACE.env."
            echo
            cat "$REPO/config.yml"
        } > "$ETC/config.yml"
        chmod 0640 "$ETC/config.yml"
    fi
fi
if [ "$ownok" = 1 ] && command -v systemd-tmpfiles >/dev/null; then
    run systemd-tmpfiles ${prefix:+--root="$prefix"} --create "$TMPFILES/ids-daemon.conf"
fi

# ---- tell systemd ------------------------------------------------------------------------
if [ -z "$prefix" ] && [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
    say "done: systemctl enable --now \"\$(systemd-escape --template ids-daemon@.service IFACE)\""
else
    say "systemd is not running here${prefix:+ (or --prefix given)}: no daemon-reload"
    say "done"
fi
