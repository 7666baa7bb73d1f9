#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the slurm-marked tests.
#
#   ci/local-slurm.sh start   # install slurm-wlm + munge (apt-get, if absent), configure, start
#   ci/local-slurm.sh stop    # cancel the jobs and stop the daemons this script started
#   ci/local-slurm.sh status  # sinfo / squeue
#
# Must run as root on Debian 12 (or a close relative).  No systemd is needed: the
# daemons are started directly and their process ids are kept in $STATE_DIR, so
# that `stop` ends exactly what `start` started.  A SLURM that is already up (or an
# /etc/slurm/slurm.conf not written by this script) is left alone.
set -euo pipefail

STATE_DIR=${HOLODASK_SLURM_STATE:-/run/holodask-local-slurm}
SLURM_CONF=/etc/slurm/slurm.conf
PARTITION=${HOLODASK_SLURM_PARTITION:-debug}
MARKER="# written by holodask ci/local-slurm.sh"
WAIT_S=${HOLODASK_SLURM_WAIT_S:-60}

log() { echo "local-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

node_idle() {
    # true when sinfo answers and lists at least one idle (or mixed) node
    sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed)'
}

setup_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

write_slurm_conf() {
    local host cpus mem_mb real_mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    real_mem_mb=$((mem_mb - 2048))
    [ "$real_mem_mb" -ge 1024 ] || real_mem_mb=1024
    if [ -e "$SLURM_CONF" ] && ! grep -qF "$MARKER" "$SLURM_CONF"; then
        die "$SLURM_CONF exists and was not written by this script; not touching it"
    fi
    install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat >"$SLURM_CONF" <<EOF
$MARKER
# One node ($host, $cpus CPUs, ${real_mem_mb} MB) for holodask's slurm-marked tests.
ClusterName=holodask-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# no accounting daemon: sacct is unavailable, squeue shows the jobs while they run
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# trust this file's node description over what slurmd detects (containers, hyperthreads)
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 0644 "$SLURM_CONF"
    log "wrote $SLURM_CONF (node $host, CPUs=$cpus, RealMemory=$real_mem_mb, partition $PARTITION)"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

wait_for_pidfile() {
    # wait_for_pidfile FILE NAME -> prints the pid once FILE names a live process
    local file=$1 name=$2 pid
    for _ in $(seq 1 50); do
        if [ -s "$file" ]; then
            pid=$(tr -dc '0-9' <"$file")
            if pid_alive "$pid"; then echo "$pid"; return 0; fi
        fi
        sleep 0.2
    done
    die "$name did not start (no live pid in $file); see /var/log/slurm and /var/log/munge"
}

start() {
    need_root
    install_packages
    if [ -e "$SLURM_CONF" ] && node_idle; then
        log "SLURM is already running with an idle node; nothing started"
        sinfo
        return 0
    fi
    [ -d "$STATE_DIR" ] && [ -n "$(ls -A "$STATE_DIR" 2>/dev/null)" ] && stop
    install -d -m 0700 "$STATE_DIR"

    setup_munge
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged is already running; using it"
    else
        rm -f /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
        wait_for_pidfile /run/munge/munged.pid munged >"$STATE_DIR/munged.pid"
        munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge failed)"
    fi

    write_slurm_conf
    rm -f /run/slurmctld.pid /run/slurmd.pid
    # -i: ignore state saved by an earlier run that may not fit this configuration
    /usr/sbin/slurmctld -i
    wait_for_pidfile /run/slurmctld.pid slurmctld >"$STATE_DIR/slurmctld.pid"
    /usr/sbin/slurmd
    wait_for_pidfile /run/slurmd.pid slurmd >"$STATE_DIR/slurmd.pid"

    log "waiting up to ${WAIT_S}s for the node to be idle"
    local t=0
    until node_idle; do
        t=$((t + 1))
        if [ "$t" -ge "$WAIT_S" ]; then
            sinfo -N -l >&2 || true
            tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
            die "no idle node after ${WAIT_S}s"
        fi
        sleep 1
    done
    sinfo
}

stop() {
    need_root
    if [ ! -d "$STATE_DIR" ]; then
        log "nothing to stop (no $STATE_DIR)"
        return 0
    fi
    if command -v scancel >/dev/null 2>&1 && [ -s "$STATE_DIR/slurmctld.pid" ]; then
        scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
    fi
    local name pid
    for name in slurmd slurmctld munged; do
        [ -s "$STATE_DIR/$name.pid" ] || continue
        pid=$(tr -dc '0-9' <"$STATE_DIR/$name.pid")
        if pid_alive "$pid"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.2; done
            pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE_DIR/$name.pid"
    done
    rmdir "$STATE_DIR" 2>/dev/null || true
}

status() {
    sinfo -N -l && squeue
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
