#!/usr/bin/env bash
# A real one-node Slurm on this machine for `forge run --executor slurm`'s tests: Debian's slurmctld,
# slurmd and munge, one node (this host, at 127.0.0.1) with all its CPUs, processes tracked without
# cgroups (they need systemd, absent in containers). Idempotent: a running cluster is left as it is.
# Prints nothing; `sinfo` works when it returns. Needs root (the daemons run as root here).
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; }
fi
if sinfo -h -o %T 2>/dev/null | grep -qx idle; then exit 0; fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
state=/var/tmp/forge-slurm
mkdir -p "$state/ctld" "$state/d" /etc/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=forge-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MaxArraySize=10001
MinJobAge=3600
DefMemPerCPU=1024
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || mungekey --create
pgrep -x munged >/dev/null || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then exit 0; fi
  sleep 1
done
echo "slurm did not come up: see $state/slurmctld.log and $state/slurmd.log" >&2
sinfo >&2 || true
exit 1
