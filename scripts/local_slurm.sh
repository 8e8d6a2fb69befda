#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try the SLURM path of the launcher and to
# test it: Debian's slurmctld, slurmd and munge, run as root, with their configuration,
# state, logs and sockets in one folder and ports of their own.
#
#   scripts/local_slurm.sh install        install the packages if missing (apt-get, as root)
#   scripts/local_slurm.sh start [DIR]    install the packages if missing (apt-get), write
#                                         DIR/slurm.conf, start munged, slurmctld and slurmd,
#                                         wait for the node to be idle, print the export line
#   scripts/local_slurm.sh status [DIR]   the daemons and the node (sinfo)
#   scripts/local_slurm.sh stop [DIR]     stop what start started, by pid
#
# DIR defaults to /tmp/local-slurm. Then, in the shell that submits:
#   export SLURM_CONF=DIR/slurm.conf
#   python -m src.train -m objective=ridge lr=0.01,0.1 hydra.launcher.executor=submitit_slurm \
#       hydra.launcher.partition=debug
set -euo pipefail

action=${1:-}
dir=$(realpath -m "${2:-/tmp/local-slurm}")
conf="$dir/slurm.conf"

die() { echo "local_slurm: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "needs root to install ${missing[*]} (apt-get)"
    echo "installing ${missing[*]} ..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
    local host cpus mem ctld_port d_port
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    ctld_port=$(free_port)
    d_port=$(free_port)
    while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
    mkdir -p "$dir/state" "$dir/spool"
    cat >"$conf" <<EOF
# written by scripts/local_slurm.sh: a one-node cluster for trying and testing
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install_packages
    if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
        echo "already running in $dir" >&2
    else
        mkdir -p "$dir"
        [ -f "$dir/munge.key" ] || mungekey --create --keyfile="$dir/munge.key" 2>/dev/null \
            || dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
        chmod 600 "$dir/munge.key"
        alive "$dir/munged.pid" || munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
            --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge.seed"
        write_conf
        SLURM_CONF=$conf slurmctld -i -f "$conf"
        SLURM_CONF=$conf slurmd -f "$conf"
    fi
    local deadline=$((SECONDS + 60)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(SLURM_CONF=$conf sinfo -h -o '%T' 2>/dev/null | head -1 || true)
        [ "$state" = "idle" ] && break
        sleep 0.5
    done
    [ "$state" = "idle" ] || die "the node is not idle after 60 s (state: '${state:-none}'); see $dir/*.log"
    echo "one-node SLURM up in $dir (partition debug). In the shell that submits:" >&2
    echo "export SLURM_CONF=$conf"
}

stop() {
    local name
    for name in slurmd slurmctld munged; do
        if alive "$dir/$name.pid"; then
            local pid
            pid=$(cat "$dir/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
    echo "stopped the one-node SLURM of $dir" >&2
}

status() {
    local name ok=0
    for name in munged slurmctld slurmd; do
        if alive "$dir/$name.pid"; then echo "$name: running (pid $(cat "$dir/$name.pid"))"
        else echo "$name: not running"; ok=1; fi
    done
    [ $ok -eq 0 ] && SLURM_CONF=$conf sinfo
    return $ok
}

case "$action" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: scripts/local_slurm.sh install|start|stop|status [DIR]" ;;
esac
