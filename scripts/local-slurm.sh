#!/usr/bin/env bash
# local-slurm.sh - a single-node SLURM cluster on loopback, for CI and for trying the SLURM profile locally.
#
# Debian 12 (SLURM 22.05), run as root; no systemd needed: munged, slurmctld and slurmd are started directly.
# Idempotent: installs only missing packages, rewrites slurm.conf only when it changed (then restarts the SLURM
# daemons so they read it), starts only daemons that are not running, and waits until the node is idle.
#
#   scripts/local-slurm.sh [start]     install if needed, start, wait until `sinfo` shows the node idle
#   scripts/local-slurm.sh status      daemon PIDs and `sinfo`; exit 0 only if slurmctld and slurmd run
#   scripts/local-slurm.sh stop        stop the daemons by the PIDs in their pidfiles (nothing else is killed)
#   scripts/local-slurm.sh uninstall   stop, then purge the packages this script installed, its config and state
#
# Environment:
#   WITH_SLURMDBD=1   also run MariaDB + slurmdbd, so `sacct` works and the SLURM executor plugin's default
#                     status command (sacct) can be used. Default 0: accounting_storage/none, which needs
#                     `slurm-status-command: squeue` in the Snakemake profile (profiles/slurm does this).
#   SLURM_WAIT_S=60   seconds to wait for the node to become idle before failing with diagnostics.
#
# Everything binds to / talks over 127.0.0.1 except slurmctld/slurmd, which listen on 0.0.0.0:6817/6818
# (SLURM has no bind-address option): run it on a CI runner or a machine whose firewall you trust.
set -euo pipefail

WITH_SLURMDBD="${WITH_SLURMDBD:-0}"
SLURM_WAIT_S="${SLURM_WAIT_S:-60}"

readonly CLUSTER=localci
readonly PARTITION=debug
readonly CONF=/etc/slurm/slurm.conf
readonly DBD_CONF=/etc/slurm/slurmdbd.conf
readonly LOG_DIR=/var/log/slurm
readonly MUNGE_PID=/run/munge/munged.pid
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly DBD_PID=/run/slurmdbd.pid
readonly MARIADB_PID=/run/mysqld/mariadbd.pid
readonly STATE_DIR=/var/lib/mibench-local-slurm
# Only for the throwaway loopback database of WITH_SLURMDBD=1 (MariaDB binds 127.0.0.1).
readonly DB_NAME=slurm_acct_db DB_USER=slurm DB_PASS=slurm-local-ci

# pidfile:comm pairs, in stop order (consumers before the services they need).
readonly DAEMONS=("$SLURMD_PID:slurmd" "$CTLD_PID:slurmctld" "$DBD_PID:slurmdbd" "$MARIADB_PID:mariadbd"
  "$MUNGE_PID:munged")

say() { echo "[local-slurm] $*" >&2; }
die() { say "error: $*"; exit 1; }

# running PIDFILE COMM: true if PIDFILE names a live process whose command name is COMM (so a stale pidfile
# whose PID was reused by another program is never mistaken for our daemon, and never killed).
running() {
  local pidfile=$1 comm=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$comm" ]]
}

# stop_daemon PIDFILE COMM: SIGTERM the pidfile's PID, wait up to 10 s, then SIGKILL; remove the pidfile.
stop_daemon() {
  local pidfile=$1 comm=$2 pid _
  if running "$pidfile" "$comm"; then
    pid=$(<"$pidfile")
    say "stopping $comm (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
    if [[ -d /proc/$pid ]]; then
      say "$comm did not exit after SIGTERM, sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

cmd_stop() {
  local entry
  for entry in "${DAEMONS[@]}"; do stop_daemon "${entry%%:*}" "${entry#*:}"; done
}

# With slurm-client installed but slurmctld down, every `snakemake` start (even a local run) waits ~10 s: the SLURM
# executor plugin probes `scontrol show config` when it is imported. `uninstall` restores a machine to no SLURM.
cmd_uninstall() {
  local pkgs=()
  [[ $EUID -eq 0 ]] || die "must run as root"
  cmd_stop
  [[ -s $STATE_DIR/installed-packages ]] && mapfile -t pkgs < <(sort -u "$STATE_DIR/installed-packages")
  if ((${#pkgs[@]})); then
    say "purging the packages this script installed: ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${pkgs[@]}" >/dev/null
  else
    say "this script installed no packages; leaving them"
  fi
  rm -rf "$STATE_DIR" /var/spool/slurmctld /var/spool/slurmd "$CONF" "$DBD_CONF"
}

cmd_status() {
  local entry pidfile comm rc=0
  for entry in "${DAEMONS[@]}"; do
    pidfile=${entry%%:*} comm=${entry#*:}
    if running "$pidfile" "$comm"; then
      echo "$comm: running (pid $(<"$pidfile"))"
    else
      echo "$comm: not running"
      if [[ $comm == slurmctld || $comm == slurmd ]]; then rc=3; fi
    fi
  done
  # Without slurmctld, sinfo would retry the connection for ~10 s before failing: skip it.
  if ((rc == 0)); then sinfo 2>&1 || rc=3; fi
  return $rc
}

install_packages() {
  local pkgs=(munge slurmctld slurmd slurm-client) missing=() p
  if [[ $WITH_SLURMDBD == 1 ]]; then pkgs+=(slurmdbd mariadb-server); fi
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get: install them by hand"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' postinst cannot start services (no systemd / policy-rc.d): harmless, we start them below.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Remember what we installed, so that `uninstall` removes exactly that.
  mkdir -p "$STATE_DIR"
  printf '%s\n' "${missing[@]}" >>"$STATE_DIR/installed-packages"
}

# The node name must be `hostname -s` and must resolve; SLURM traffic itself goes to 127.0.0.1.
ensure_hostname() {
  if ! getent hosts "$NODE" >/dev/null; then
    say "adding '127.0.0.1 $NODE' to /etc/hosts"
    echo "127.0.0.1 $NODE" >>/etc/hosts
  fi
}

slurm_conf() {
  local cpus mem_mb accounting
  cpus=$(nproc)
  # RealMemory above the real memory invalidates the node: declare ~85 %, rounded down to 100 MB.
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.85 / 100) * 100}' /proc/meminfo)
  if [[ $WITH_SLURMDBD == 1 ]]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
  else
    accounting="AccountingStorageType=accounting_storage/none"
  fi
  cat <<EOF
# Written by mibench scripts/local-slurm.sh (single-node loopback cluster); rewritten when it changes.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# No cgroups (containers/CI): track processes by /proc, no task binding, no job accounting sampling.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to 'squeue -t all' for 5 min: the plugin's squeue status mode needs this, and it
# falls back to sacct if MinJobAge < 3 x slurm-init-seconds-before-status-checks.
MinJobAge=300
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

write_config() {
  local wanted
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
  wanted=$(slurm_conf)
  if [[ -f $CONF && "$(<"$CONF")" == "$wanted" ]]; then return 0; fi
  printf '%s\n' "$wanted" >"$CONF"
  say "wrote $CONF"
  # `scontrol reconfigure` cannot switch the accounting plugin: restart so both daemons read the new file.
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld
}

start_munge() {
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating the munge key"
    runuser -u munge -- mungekey -c
  fi
  if running "$MUNGE_PID" munged && munge -n </dev/null >/dev/null 2>&1; then return 0; fi
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  local _
  for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

start_slurmdbd() {
  local _
  mkdir -p /run/mysqld
  chown mysql:mysql /run/mysqld
  if ! running "$MARIADB_PID" mariadbd; then
    say "starting mariadbd on 127.0.0.1"
    /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file="$MARIADB_PID" \
      >>"$LOG_DIR/mariadbd.out" 2>&1 &
    for _ in $(seq 100); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb-admin ping >/dev/null || die "mariadbd did not start (see $LOG_DIR/mariadbd.out)"
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost'; FLUSH PRIVILEGES;"
  (
    umask 077 # slurmdbd refuses a config file that others can read
    cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
  )
  chmod 600 "$DBD_CONF"
  if ! running "$DBD_PID" slurmdbd; then
    say "starting slurmdbd"
    /usr/sbin/slurmdbd
  fi
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  # Registering the cluster also creates the account 'root' for user root.
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurm() {
  local _
  if ! running "$CTLD_PID" slurmctld; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
  fi
  for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
  if ! running "$SLURMD_PID" slurmd; then
    say "starting slurmd"
    /usr/sbin/slurmd
  fi
}

wait_idle() {
  local deadline=$((SECONDS + SLURM_WAIT_S)) state resumed=0
  while :; do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    [[ $state == idle ]] && return 0
    # A node left down/drained by an earlier run (e.g. a killed slurmd) needs an explicit resume, once.
    if [[ $state =~ ^(down|drain|drained|draining)\*?$ ]] && ((resumed == 0 && SECONDS > 3)); then
      say "node is '$state', resuming it"
      scontrol update NodeName="$NODE" State=RESUME || true
      resumed=1
    fi
    if ((SECONDS > deadline)); then
      say "node $NODE not idle after ${SLURM_WAIT_S}s (state '$state')"
      scontrol show node "$NODE" >&2 || true
      tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

cmd_start() {
  [[ $EUID -eq 0 ]] || die "must run as root (installs packages, starts system daemons)"
  [[ $WITH_SLURMDBD == 0 || $WITH_SLURMDBD == 1 ]] || die "WITH_SLURMDBD must be 0 or 1, got '$WITH_SLURMDBD'"
  NODE=$(hostname -s)
  install_packages
  ensure_hostname
  write_config
  start_munge
  if [[ $WITH_SLURMDBD == 1 ]]; then start_slurmdbd; fi
  start_slurm
  wait_idle
  say "ready: node $NODE idle in partition $PARTITION, accounting: $([[ $WITH_SLURMDBD == 1 ]] && echo slurmdbd || echo none)"
  sinfo
}

case "${1:-start}" in
  start) cmd_start ;;
  stop)
    cmd_stop
    if command -v sinfo >/dev/null; then
      say "daemons stopped; SLURM stays installed, so each snakemake start now waits ~10 s for the plugin's" \
        "'scontrol show config' probe ('$0 uninstall' removes what this script installed)"
    fi
    ;;
  status) cmd_status ;;
  uninstall) cmd_uninstall ;;
  *)
    echo "usage: $0 [start|stop|status|uninstall]   (env: WITH_SLURMDBD=0|1, SLURM_WAIT_S=60)" >&2
    exit 2
    ;;
esac
