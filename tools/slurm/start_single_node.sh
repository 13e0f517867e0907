#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (munge, slurmctld, slurmd; as root) for the
# cohort's SLURM test and for trying `clinicalfmamba cohort ... --cluster slurm` on a
# workstation. Installs Debian's slurm-wlm and munge when they are missing.
#
#   eval "$(tools/slurm/start_single_node.sh)"    # prints: export SLURM_CONF=...
#   tools/slurm/start_single_node.sh --stop
#
# The configuration and state stay in $STATE (default /tmp/clinicalfmamba-slurm); the
# machine's own /etc/slurm is left alone: SLURM's commands find this cluster through
# SLURM_CONF. One partition, "debug", holds the node with all its cores and memory.
set -euo pipefail
STATE=${STATE:-/tmp/clinicalfmamba-slurm}
CONF=$STATE/slurm.conf

stop() {
    for daemon in slurmd slurmctld; do
        [ -f "$STATE/$daemon.pid" ] && kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true
        rm -f "$STATE/$daemon.pid"
    done
}
if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "run as root (it starts SLURM's daemons)" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
fi

# munge authenticates SLURM's messages; Debian's package made its key.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
fi

stop
mkdir -p "$STATE/ctld" "$STATE/d"
host=$(hostname -s)
memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
cat > "$CONF" <<CONFIG
ClusterName=clinicalfmamba
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONFIG

slurmctld -f "$CONF"
slurmd -f "$CONF"
export SLURM_CONF=$CONF
for _ in $(seq 60); do  # the node registers within seconds
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        echo "export SLURM_CONF=$CONF"
        exit 0
    fi
    sleep 1
done
echo "SLURM did not come up within a minute; see $STATE/slurmctld.log and slurmd.log" >&2
exit 1
