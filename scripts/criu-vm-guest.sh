#!/bin/sh
# shellcheck shell=sh
# scripts/criu-vm-guest.sh: /init of the CRIU VM (scripts/criu-vm.sh). Runs busybox sh.
#
# It drives criu-wrap against real processes with a real CRIU and prints on the serial
# console, for the host to parse:
#   CW JSON <step> <record>       every JSON line criu-wrap wrote, tagged with the step
#   CW RESULT <name> ok|fail <why>  one verdict per check
#   CW DONE                       the end (missing: the guest crashed or hung)
# Mode (kernel command line cw.mode=): test and pg (each a part of tools/criu-wrap/tests/vm.rs,
# which boots once in mode all for both), bench (bench/criu-wrap.sh; CW_MIB=256 and CW_RATE=1
# on the command line set its process).

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% tmp /tmp
mkdir -p /dev/pts /run
mount -t devpts devpts /dev/pts
# CRIU's start-up probes and its network lock need nf_tables; dumping sockets needs the
# sock_diag modules; and lo must be up.
modprobe crc32c_generic 2>/dev/null
for m in nf_tables inet_diag tcp_diag udp_diag unix_diag netlink_diag packet_diag; do
  modprobe "$m" 2>/dev/null || echo "CW NOTE modprobe $m failed"
done
ifconfig lo 127.0.0.1 up
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
MODE=$(sed -n 's/.*cw\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "CW KERNEL $(uname -r) MODE ${MODE:-test}"
cd /tmp || exit 1

result() { echo "CW RESULT $1 $2 ${3:-}"; }

# cw STEP ARGS...: run criu-wrap, tag its JSON lines, keep them in /tmp/STEP.out; $rc is
# criu-wrap's exit code. Its stderr goes to the console too (for humans).
cw() {
  step=$1
  shift
  criu-wrap "$@" >"/tmp/$step.out" 2>"/tmp/$step.err"
  rc=$?
  sed "s/^/CW JSON $step /" "/tmp/$step.out"
  sed "s/^/CW STDERR $step /" "/tmp/$step.err"
  return 0
}

# field STEP TYPE FIELD: a field of the first TYPE record of STEP (strings without quotes).
field() {
  grep "\"type\":\"$2\"" "/tmp/$1.out" | head -1 |
    sed -n "s/.*\"$3\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" | tr -d '"'
}

# contiguous FILE: every line N holds the number N (a counter that never restarted, never
# skipped and never ran twice).
contiguous() { awk '$1 != NR { bad = 1 } END { exit bad }' "$1"; }
lines() { wc -l <"$1" | tr -d ' '; }

# start_counter NAME: a shell loop appending 1, 2, 3... to /tmp/NAME.log in its own session
# (CRIU needs the dumped tree to lead its session); prints its PID.
start_counter() {
  setsid sh -c "i=0; while true; do i=\$((i+1)); echo \$i >> /tmp/$1.log; sleep 0.1; done" \
    </dev/null >/dev/null 2>&1 &
  echo $!
}

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# check_continues NAME BEFORE: the counter grew past BEFORE and has no gap, repeat or restart.
check_continues() {
  after=$(lines "/tmp/$1.log")
  if [ "$after" -gt "$2" ] && contiguous "/tmp/$1.log"; then
    return 0
  fi
  echo "CW NOTE $1: before=$2 after=$after head=$(head -3 "/tmp/$1.log" | tr '\n' ' ') tail=$(tail -3 "/tmp/$1.log" | tr '\n' ' ')"
  return 1
}

test_mode() {
  # 1. What this kernel supports.
  cw check check
  modes=$(field check verdict modes)
  if [ "$rc" = 0 ] && grep -q '"pre_copy"' /tmp/check.out; then
    result check ok "modes $(grep -o '"modes":\[[^]]*\]' /tmp/check.out)"
  else
    result check fail "rc=$rc modes=$modes"
  fi

  # 2. A counter: dump (pre-copy by default here), it stops; restore, it goes on.
  P=$(start_counter counter)
  sleep 1.5
  cw dump-counter dump --pid "$P" --images /tmp/img-counter
  sleep 0.5
  c1=$(lines /tmp/counter.log)
  sleep 1
  c2=$(lines /tmp/counter.log)
  mode=$(field dump-counter dump mode)
  rounds=$(field dump-counter dump rounds)
  frozen=$(field dump-counter dump frozen_ms)
  if [ "$rc" = 0 ] && [ "$c1" = "$c2" ] && ! alive "$P" && [ "$mode" = pre_copy ]; then
    result dump ok "mode=$mode rounds=$rounds frozen_ms=$frozen counter=$c1"
  else
    result dump fail "rc=$rc mode=$mode counter $c1 -> $c2 alive=$(alive "$P" && echo yes)"
  fi
  cw restore-counter restore --images /tmp/img-counter --detach
  sleep 2
  rpid=$(field restore-counter restore pid)
  if [ "$rc" = 0 ] && [ "$rpid" = "$P" ] && check_continues counter "$c1"; then
    result restore ok "pid=$rpid counter $c1 -> $(lines /tmp/counter.log), contiguous"
  else
    result restore fail "rc=$rc pid=$rpid (was $P)"
  fi
  kill -9 "$P" 2>/dev/null

  # 3. Memory with pre-copy while it is being dirtied: every page must come back right.
  setsid criu-workload mem --mib 64 --dirty-mib-per-sec 4 --status /tmp/mem.status </dev/null >/dev/null 2>&1 &
  M=$!
  sleep 3
  cw dump-mem dump --pid "$M" --images /tmp/img-mem
  t1=$(sed -n 's/tick=\([0-9]*\).*/\1/p' /tmp/mem.status)
  cw restore-mem restore --images /tmp/img-mem --detach
  sleep 4
  st=$(cat /tmp/mem.status)
  t2=$(echo "$st" | sed -n 's/tick=\([0-9]*\).*/\1/p')
  rounds=$(field dump-mem dump rounds)
  if [ "$rc" = 0 ] && [ "${t2:-0}" -gt "${t1:-0}" ] && echo "$st" | grep -q 'errors=0' && [ "${rounds:-0}" -ge 2 ]; then
    result memory ok "rounds=$rounds pages=$(field dump-mem dump pages) ticks $t1 -> $t2, $st"
  else
    result memory fail "rc=$rc rounds=$rounds ticks $t1 -> $t2 status: $st"
  fi
  kill -9 "$M" 2>/dev/null

  # 4. An established TCP connection (client dumped, server outside the tree).
  sleep 100000 | nc -l -p 5555 >/tmp/tcp.log 2>/dev/null &
  sleep 0.5
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done | nc 127.0.0.1 5555' \
    </dev/null >/dev/null 2>&1 &
  T=$!
  sleep 2
  cw dump-tcp dump --pid "$T" --images /tmp/img-tcp --tcp-established
  drc=$rc
  t1=$(lines /tmp/tcp.log)
  sleep 1
  t1b=$(lines /tmp/tcp.log)
  cw restore-tcp restore --images /tmp/img-tcp --detach
  sleep 2.5
  if [ "$drc" = 0 ] && [ "$rc" = 0 ] && [ "$t1" = "$t1b" ] && check_continues tcp "$t1" && pidof nc >/dev/null; then
    result tcp ok "lines $t1 -> $(lines /tmp/tcp.log) over the same connection"
  else
    result tcp fail "dump rc=$drc restore rc=$rc lines $t1/$t1b -> $(lines /tmp/tcp.log)"
  fi
  # The TCP connection without the flag: diagnosed, and the process keeps running.
  cw diag-tcp dump --pid "$T" --images /tmp/img-tcp2 --pre-dump 0
  if [ "$rc" = 65 ] && [ "$(field diag-tcp error cause)" = tcp_established_needed ] && alive "$T"; then
    result diag_tcp ok "$(field diag-tcp error fix)"
  else
    result diag_tcp fail "rc=$rc cause=$(field diag-tcp error cause)"
  fi
  kill -9 "$T" 2>/dev/null
  killall nc sleep 2>/dev/null

  # 5. Migrate to another directory: the counter moves and goes on.
  P=$(start_counter mig)
  sleep 1.5
  cw migrate migrate --pid "$P" --to /tmp/target-ok
  sleep 2
  c1=$(lines /tmp/mig.log)
  if [ "$rc" = 0 ] && [ "$(field migrate migrate outcome)" = migrated ] && check_continues mig 10; then
    result migrate ok "downtime_ms=$(field migrate migrate downtime_ms) rounds=$(field migrate migrate rounds) counter=$c1"
  else
    result migrate fail "rc=$rc outcome=$(field migrate migrate outcome)"
  fi
  kill -9 "$P" 2>/dev/null

  # 6. Migrate with a copy corrupted in flight: the source is restored from its images.
  cat >/tmp/bad-rsync <<'EOF'
#!/bin/sh
rsync "$@" || exit $?
for a; do src=$dst; dst=$a; done
case $src in */pre-*/) exit 0 ;; esac
f=$(ls "$dst"core-*.img | head -1)
printf X >>"$f"
EOF
  chmod +x /tmp/bad-rsync
  P=$(start_counter back)
  sleep 1.5
  cw migrate-bad migrate --pid "$P" --to /tmp/target-bad --rsync /tmp/bad-rsync
  sleep 2
  if [ "$rc" = 75 ] && [ "$(field migrate-bad migrate outcome)" = resumed_on_source ] &&
    [ ! -e /tmp/target-bad/restore.log ] && check_continues back 10; then
    result migrate_resume ok "$(field migrate-bad resumed how) as PID $(field migrate-bad resumed pid)"
  else
    result migrate_resume fail "rc=$rc outcome=$(field migrate-bad migrate outcome)"
  fi

  # 7. Restore while the original still runs: PID in use.
  cw diag-pid dump --pid "$P" --images /tmp/img-pid --leave-running --pre-dump 0
  cw diag-pid2 restore --images /tmp/img-pid --detach
  if [ "$rc" = 75 ] && [ "$(field diag-pid2 error cause)" = pid_in_use ]; then
    result diag_pid_in_use ok "$(field diag-pid2 error problem)"
  else
    result diag_pid_in_use fail "rc=$rc cause=$(field diag-pid2 error cause)"
  fi
  kill -9 "$P" 2>/dev/null

  # 8. SysV shared memory: refused outside an IPC namespace, fine inside one (the recipe
  # for PostgreSQL: scripts/criu-postgres.sh).
  setsid criu-workload shm </dev/null >/dev/null 2>&1 &
  S=$!
  sleep 1
  cw diag-shm dump --pid "$S" --images /tmp/img-shm --pre-dump 0
  if [ "$rc" = 65 ] && [ "$(field diag-shm error cause)" = sysv_shm_outside_ipc_ns ] && alive "$S"; then
    result diag_shm ok "$(field diag-shm error fix)"
  else
    result diag_shm fail "rc=$rc cause=$(field diag-shm error cause)"
  fi
  kill -9 "$S" 2>/dev/null
  # The namespace's init leads its own session (setsid inside), as CRIU needs.
  setsid unshare -ipf setsid criu-workload shm </dev/null >/dev/null 2>&1 &
  U=$!
  sleep 1
  N=$(tr -d ' ' 2>/dev/null <"/proc/$U/task/$U/children")
  cw shm-ns dump --pid "${N:-0}" --images /tmp/img-shm-ns --pre-dump 0
  drc=$rc
  cw shm-ns-restore restore --images /tmp/img-shm-ns --detach
  if [ "$drc" = 0 ] && [ "$rc" = 0 ]; then
    result shm_in_ipc_ns ok "dumped and restored the namespace's init (PID $N)"
  else
    result shm_in_ipc_ns fail "dump rc=$drc restore rc=$rc"
  fi
  kill -9 "$U" "$N" "$(field shm-ns-restore restore pid)" 2>/dev/null

  # 9. A unix socket to a process outside the dump.
  setsid criu-workload unix-listen /tmp/u.sock </dev/null >/dev/null 2>&1 &
  L=$!
  sleep 0.5
  setsid criu-workload unix-connect /tmp/u.sock </dev/null >/dev/null 2>&1 &
  C=$!
  sleep 1
  cw diag-unix dump --pid "$C" --images /tmp/img-unix --pre-dump 0
  if [ "$rc" = 65 ] && [ "$(field diag-unix error cause)" = external_unix_socket ] && alive "$C"; then
    result diag_unix ok
  else
    result diag_unix fail "rc=$rc cause=$(field diag-unix error cause)"
  fi
  kill -9 "$C" "$L" 2>/dev/null

  # 10. A file the process had open is gone at restore time.
  echo data >/tmp/keep.txt
  setsid sh -c 'exec 3</tmp/keep.txt; while true; do sleep 0.2; done' </dev/null >/dev/null 2>&1 &
  F=$!
  sleep 1
  cw diag-file dump --pid "$F" --images /tmp/img-file --pre-dump 0
  rm /tmp/keep.txt
  cw diag-file2 restore --images /tmp/img-file --detach
  if [ "$rc" = 65 ] && [ "$(field diag-file2 error cause)" = missing_file ] &&
    grep -q 'keep.txt' /tmp/diag-file2.out; then
    result diag_missing_file ok "$(field diag-file2 error problem)"
  else
    result diag_missing_file fail "rc=$rc cause=$(field diag-file2 error cause)"
  fi

  # 11. Not root.
  P=$(start_counter user)
  sleep 0.5
  mkdir -p /tmp/img-user && chmod 777 /tmp/img-user
  su -s /bin/sh nobody -c "criu-wrap dump --pid $P --images /tmp/img-user/d --pre-dump 0" \
    >/tmp/diag-user.out 2>/tmp/diag-user.err
  rc=$?
  sed 's/^/CW JSON diag-user /' /tmp/diag-user.out
  if [ "$rc" = 74 ] && [ "$(field diag-user error cause)" = no_permission ] && alive "$P"; then
    result diag_no_permission ok
  else
    result diag_no_permission fail "rc=$rc cause=$(field diag-user error cause)"
  fi
  kill -9 "$P" 2>/dev/null

  # 12. Not its own session leader.
  sh -c 'while true; do sleep 0.2; done' </dev/null >/dev/null 2>&1 &
  Q=$!
  sleep 0.5
  cw diag-session dump --pid "$Q" --images /tmp/img-session --pre-dump 0
  if [ "$rc" = 65 ] && [ "$(field diag-session error cause)" = session_leader_outside ] && alive "$Q"; then
    result diag_session ok
  else
    result diag_session fail "rc=$rc cause=$(field diag-session error cause)"
  fi
  kill -9 "$Q" 2>/dev/null
}

# The benchmark: a process owning 256 MiB that dirties 1 MiB/s; frozen time and image size of
# a single stop-and-copy dump against pre-copy, and plain `criu dump` as the peer.
bench_mode() {
  MIB=${CW_MIB:-256}
  start_mem() {
    rm -f /tmp/bench.status
    setsid criu-workload mem --mib "$MIB" --dirty-mib-per-sec "${CW_RATE:-1}" --status /tmp/bench.status \
      </dev/null >/dev/null 2>&1 &
    B=$!
    # Until it has filled its memory and checked it once, then a few seconds of dirtying.
    while ! grep -Eq 'tick=([2-9]|[1-9][0-9])' /tmp/bench.status 2>/dev/null; do sleep 0.5; done
    sleep 3
  }
  # CRIU caches its kernel feature probe in /run/criu.kdat: take that cost before measuring.
  criu check >/dev/null 2>&1
  echo "CW BENCH setup mib=$MIB rate_mib_s=${CW_RATE:-1}"
  # One untimed dump first: the first write of that much memory into the guest's page cache
  # is several times slower under emulation (the host backs the pages then).
  start_mem
  mkdir -p /tmp/b-warm
  criu dump -t "$B" -D /tmp/b-warm -o dump.log >/dev/null 2>&1
  rm -rf /tmp/b-warm
  kill -9 "$B" 2>/dev/null
  for run in $(seq 1 "${CW_RUNS:-2}"); do
    start_mem
    mkdir -p /tmp/b-raw
    s=$(cut -d' ' -f1 /proc/uptime)
    criu dump -t "$B" -D /tmp/b-raw -o dump.log -v4 >/dev/null 2>&1
    r=$?
    e=$(cut -d' ' -f1 /proc/uptime)
    echo "CW BENCH raw run=$run rc=$r wall_s=$(awk -v s="$s" -v e="$e" 'BEGIN{printf "%.2f", e-s}') image_kib=$(du -sk /tmp/b-raw | cut -f1)"
    rm -rf /tmp/b-raw
    kill -9 "$B" 2>/dev/null

    start_mem
    cw "bench-single-$run" dump --pid "$B" --images /tmp/b-single --pre-dump 0
    echo "CW BENCH single run=$run rc=$rc image_kib=$(du -sk /tmp/b-single | cut -f1)"
    rm -rf /tmp/b-single
    kill -9 "$B" 2>/dev/null

    start_mem
    cw "bench-precopy-$run" dump --pid "$B" --images /tmp/b-pre --pre-dump auto
    echo "CW BENCH precopy run=$run rc=$rc image_kib=$(du -sk /tmp/b-pre | cut -f1)"
    # The pre-copied process comes back intact.
    cw "bench-restore-$run" restore --images /tmp/b-pre --detach
    sleep 4
    echo "CW BENCH restored run=$run rc=$rc status=$(cat /tmp/bench.status)"
    kill -9 "$(field "bench-restore-$run" restore pid)" 2>/dev/null
    rm -rf /tmp/b-pre
  done
}

# PostgreSQL under CRIU, the recipe of scripts/criu-postgres.sh done by hand (busybox has no
# bash): dynamic_shared_memory_type=mmap, the same data directory (here: the same host), and
# namespaces, in two variants:
#   pidns  IPC + PID namespaces, and a mount namespace with a /proc of its own (CRIU's
#          parasite needs a /proc of the task's PID namespace when the task is not root);
#          the mounts are slaves of the host's and passed to CRIU as external.
#   ipcns  an IPC namespace only (SysV shm is dumpable); PIDs stay the host's.
pg_variant() {
  name=$1 ns=$2 data=$3 port=$4
  psql_() { psql -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1" 2>&1; }
  cmd="exec postgres -D $data -c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=/var/run/postgresql -c dynamic_shared_memory_type=mmap -c huge_pages=off -c shared_buffers=32MB -c max_connections=20"
  # Inside: the standard descriptors are reopened (so they belong to the namespace's mounts),
  # the postmaster leads its own session, su execs the shell which execs postgres.
  inner="exec </dev/null >/tmp/pg-$name.log 2>&1; exec setsid su -s /bin/sh postgres -c '$cmd'"
  if [ "$ns" = pidns ]; then
    setsid unshare -ipfm --propagation slave --mount-proc sh -c "$inner" </dev/null >/dev/null 2>&1 &
    U=$!
    opts="--criu-opt=--ext-mount-map --criu-opt=auto --criu-opt=--enable-external-masters"
  else
    unshare -i sh -c "$inner" </dev/null >/dev/null 2>&1 &
    U=$!
    opts=""
  fi
  i=0
  while [ "$(psql_ 'select 1')" != 1 ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
  if [ "$(psql_ 'select 1')" != 1 ]; then
    result "pg_${name}_start" fail "$(tail -5 "/tmp/pg-$name.log" | tr '\n' ' ')"
    return
  fi
  if [ "$ns" = pidns ]; then N=$(tr -d ' ' 2>/dev/null <"/proc/$U/task/$U/children"); else N=$U; fi
  result "pg_${name}_start" ok "postmaster host PID $N ($(grep NSpid "/proc/$N/status" | tr '\t' ' '))"
  psql_ "create table t as select generate_series(1, 10000) as i; create table u(x text)" >/dev/null
  sum1=$(psql_ 'select sum(i) from t')

  # shellcheck disable=SC2086 # opts is a list of words
  cw "pg-$name-dump" dump --pid "$N" --images "/tmp/pg-$name-img" $opts
  down=$(psql_ 'select 1' | head -1)
  if [ "$rc" = 0 ] && [ "$down" != 1 ]; then
    result "pg_${name}_dump" ok "mode=$(field "pg-$name-dump" dump mode) rounds=$(field "pg-$name-dump" dump rounds) frozen_ms=$(field "pg-$name-dump" dump frozen_ms) image_bytes=$(field "pg-$name-dump" dump image_bytes)"
  else
    result "pg_${name}_dump" fail "rc=$rc server answers: $down; $(grep -o '"log":\[[^]]*\]' "/tmp/pg-$name-dump.out")"
    kill -9 "$N" 2>/dev/null
    return
  fi
  # shellcheck disable=SC2086
  cw "pg-$name-restore" restore --images "/tmp/pg-$name-img" --detach $opts
  sleep 1
  sum2=$(psql_ 'select sum(i) from t')
  psql_ "insert into t select generate_series(10001, 20000); insert into u values ('after restore'); checkpoint" >/dev/null
  n=$(psql_ 'select count(*) from t')
  if [ "$rc" = 0 ] && [ "$sum2" = "$sum1" ] && [ "$n" = 20000 ]; then
    result "pg_${name}_restore" ok "sum(i)=$sum2 before and after; writes after the restore: count=$n"
  else
    result "pg_${name}_restore" fail "rc=$rc sum $sum1 -> $sum2 count=$n"
    grep -E 'Error|Warn|BUG' "/tmp/pg-$name-img/restore.log" | tail -12 | sed 's/^/CW NOTE restore.log: /'
    return
  fi

  # Migrate to another directory of the same host (the same data directory, so nothing to
  # sync; the hook is where a real migration copies PGDATA while the server is frozen).
  # shellcheck disable=SC2086
  cw "pg-$name-migrate" migrate --pid "$N" --to "/tmp/pg-$name-target" --after-dump "echo would rsync $data now" $opts
  sleep 1
  n=$(psql_ "insert into u values ('after migrate'); select count(*) from u" | tail -1)
  if [ "$rc" = 0 ] && [ "$(field "pg-$name-migrate" migrate outcome)" = migrated ] && [ "$n" = 2 ]; then
    result "pg_${name}_migrate" ok "downtime_ms=$(field "pg-$name-migrate" migrate downtime_ms) frozen_ms=$(field "pg-$name-migrate" migrate frozen_ms)"
  else
    result "pg_${name}_migrate" fail "rc=$rc outcome=$(field "pg-$name-migrate" migrate outcome) count(u)=$n"
  fi

  # A clean shutdown still works: signal the postmaster by its host PID (never pg_ctl from
  # outside a PID namespace: postmaster.pid says 1 there).
  kill -INT "$N"
  i=0
  while alive "$N" && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
  if ! alive "$N" && grep -q 'database system is shut down' "/tmp/pg-$name.log"; then
    result "pg_${name}_shutdown" ok
  else
    result "pg_${name}_shutdown" fail "$(tail -3 "/tmp/pg-$name.log" | tr '\n' ' ')"
  fi
}

pg_mode() {
  PGB=$(find /usr/lib/postgresql -maxdepth 2 -name bin | head -1)
  export PATH="$PATH:$PGB"
  cp -a /pgdata /pgdata2
  pg_variant pidns pidns /pgdata 5432
  pg_variant ipcns ipcns /pgdata2 5433
}

case ${MODE:-test} in
  bench) bench_mode ;;
  pg) pg_mode ;;
  # One boot for both (the tests: booting under software emulation is the slow part).
  all) test_mode; pg_mode ;;
  *) test_mode ;;
esac
echo "CW DONE"
echo o >/proc/sysrq-trigger
poweroff -f
