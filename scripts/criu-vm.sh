#!/usr/bin/env bash
# scripts/criu-vm.sh: boot a small VM with a real CRIU and run a guest script in it.
#
# This machine's kernel may be newer than the distribution's CRIU understands (Debian
# bookworm's 3.17.1 fails on 6.18 with "vdso: Unexpected rt vDSO area bounds"), and may lack
# soft-dirty tracking. Debian's own kernel package for the same release, booted under qemu
# with software emulation (no KVM needed), runs that CRIU, so the real checkpoint/restore
# tests and the benchmark run there:
#
#   scripts/criu-vm.sh [--mode test|bench|pg|all|explore] [--mem MIB] [--timeout SECS] [--guest FILE]
#                      [--cmdline 'KEY=VALUE ...']   (extra kernel parameters: init's environment)
#
# Mode pg also puts PostgreSQL ($PG_BIN/postgres and psql with their libraries, the share
# directory, zoneinfo and a cluster made here with initdb) into the initramfs.
#
# The initramfs holds busybox, criu and its libraries, rsync, the netfilter modules CRIU
# loads (nf_tables for its network lock and start-up probes), the criu-wrap binary and the
# criu-workload example with their libraries, and the guest script as /init. The guest prints
# its results on the serial console, which is this script's stdout (the Rust test
# tools/criu-wrap/tests/vm.rs parses it); the console is also saved as $CACHE/console-MODE.log.
#
# The kernel package and its unpacked tree are cached in $CRIU_VM_CACHE (default
# target/criu-vm), so only the first run downloads anything. Binaries come from
# $CRIU_WRAP_BIN and $CRIU_WORKLOAD_BIN (default: built here with cargo, debug profile;
# CRIU_VM_PROFILE=release for the benchmark).
#
# Exit codes: 0 the VM ran the guest script to its end (the guest's own verdict is in the
# output), 69 a prerequisite is missing (qemu, busybox-static, criu, cpio, kmod, rsync or the
# kernel package), 75 the VM did not finish within the timeout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=test MEM=1024 TIMEOUT=420 EXTRA=""
GUEST=$ROOT/scripts/criu-vm-guest.sh
while (($#)); do
  case $1 in
    --mode) pgs_val "$@"; MODE=$2; shift 2 ;;
    --mem) pgs_val "$@"; MEM=$2; shift 2 ;;
    --timeout) pgs_val "$@"; TIMEOUT=$2; shift 2 ;;
    --guest) pgs_val "$@"; GUEST=$2; shift 2 ;;
    --cmdline) pgs_val "$@"; EXTRA=$2; shift 2 ;;
    -h | --help) pgs_help ;;
    *) pgs_usage "unknown argument '$1'" ;;
  esac
done
CACHE=${CRIU_VM_CACHE:-$ROOT/target/criu-vm}
mkdir -p "$CACHE"

# What the host needs; each missing piece is named with the Debian package that provides it.
missing=()
for item in qemu-system-x86_64:qemu-system-x86 /bin/busybox:busybox-static criu:criu \
  cpio:cpio depmod:kmod rsync:rsync apt-get:apt dpkg:dpkg ldd:libc-bin; do
  what=${item%%:*} pkg=${item#*:}
  if [[ $what == /* ]]; then [[ -x $what ]] && continue; else command -v "$what" >/dev/null 2>&1 && continue; fi
  missing+=("$pkg")
done
((${#missing[@]} == 0)) ||
  pgs_die "$EX_UNAVAILABLE" "missing ${missing[*]} (apt-get install ${missing[*]}, or make setup)"
CRIU=$(command -v criu)
# busybox must be static: the guest has only the libraries copied for criu and the tools.
if ldd /bin/busybox >/dev/null 2>&1; then
  pgs_die "$EX_UNAVAILABLE" "/bin/busybox is dynamically linked: install busybox-static"
fi

# The kernel: the version linux-image-amd64 points at, downloaded once and unpacked.
kernel_tree() {
  local pkg K deb
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
  if [[ -z $pkg ]]; then
    # No package index (fresh container): use a kernel already in the cache, if any.
    K=$(find "$CACHE" -maxdepth 1 -name 'kroot-*' -printf '%f\n' 2>/dev/null | sed 's/^kroot-//' | sort -V | tail -1)
    [[ -n $K ]] || pgs_die "$EX_UNAVAILABLE" "apt-cache knows no linux-image-amd64 (run apt-get update) and no kernel is cached in $CACHE"
  else
    K=${pkg#linux-image-}
  fi
  if [[ ! -e $CACHE/kroot-$K/.done ]]; then
    pgs_log "fetching Debian kernel $K (once; cached in $CACHE)"
    rm -rf "$CACHE/kroot-$K" "$CACHE/dl"
    mkdir -p "$CACHE/dl"
    (cd "$CACHE/dl" && apt-get download "$pkg" >/dev/null 2>&1) ||
      pgs_die "$EX_UNAVAILABLE" "apt-get download $pkg failed (no network or stale package index: apt-get update)"
    deb=$(ls "$CACHE"/dl/*.deb)
    dpkg -x "$deb" "$CACHE/kroot-$K"
    depmod -b "$CACHE/kroot-$K" "$K"
    rm -rf "$CACHE/dl"
    touch "$CACHE/kroot-$K/.done"
  fi
  echo "$K"
}
K=$(kernel_tree)
KROOT=$CACHE/kroot-$K

# Copy a binary and every library it links into the initramfs tree $1.
copy_with_libs() {
  local dest=$1 bin=$2 l
  cp --parents -L "$bin" "$dest/"
  for l in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*'); do
    [[ -e $dest$l ]] || cp --parents -L "$l" "$dest/"
  done
}

# The base archive (busybox, criu, rsync, modules) depends only on the host's packages and
# the kernel, so it is built once per kernel + criu version; the top archive (our binaries and
# the guest script) is rebuilt every run. The kernel unpacks concatenated archives in order.
criu_ver=$(dpkg-query -W -f '${Version}' criu 2>/dev/null || echo unknown)
BASE=$CACHE/base-$K-$criu_ver.cpio.gz
if [[ ! -s $BASE ]]; then
  pgs_log "building the base initramfs (kernel $K, criu $criu_ver)"
  ir=$CACHE/ir-base
  rm -rf "$ir"
  mkdir -p "$ir"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,run,root} "$ir/lib/modules/$K/kernel"
  cp /bin/busybox "$ir/bin/busybox"
  for c in $(/bin/busybox --list); do
    [[ $c == busybox ]] || ln -sf busybox "$ir/bin/$c"
  done
  ln -sf ../bin/busybox "$ir/sbin/modprobe"
  copy_with_libs "$ir" "$CRIU"
  copy_with_libs "$ir" "$(command -v rsync)"
  M=$KROOT/lib/modules/$K
  for d in net/netfilter net/ipv4 net/ipv6 net/unix net/netlink net/packet crypto lib; do
    [[ -d $M/kernel/$d ]] || continue
    mkdir -p "$ir/lib/modules/$K/kernel/$d"
    cp -r "$M/kernel/$d/." "$ir/lib/modules/$K/kernel/$d/"
  done
  cp "$M"/modules.* "$ir/lib/modules/$K/"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$ir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$ir/etc/group"
  (cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$BASE.tmp")
  mv "$BASE.tmp" "$BASE"
  rm -rf "$ir"
fi

# PostgreSQL, for mode pg: binaries, libraries, share files and a fresh cluster, owned by the
# host's postgres uid (cpio keeps owners), in an archive cached per PostgreSQL version.
PGARC=""
if [[ $MODE == pg || $MODE == all ]]; then
  if ! id postgres >/dev/null 2>&1 || [[ ! -x $PG_BIN/postgres ]]; then
    pgs_die "$EX_UNAVAILABLE" "mode pg needs PostgreSQL ($PG_BIN/postgres) and a postgres user (make setup)"
  fi
  pgver=$("$PG_BIN/postgres" --version | awk '{print $3}')
  PGARC=$CACHE/pg-$pgver.cpio.gz
  if [[ ! -s $PGARC ]]; then
    pgs_log "building the PostgreSQL archive ($pgver)"
    pir=$CACHE/ir-pg
    rm -rf "$pir"
    mkdir -p "$pir/etc" "$pir/var/run/postgresql"
    copy_with_libs "$pir" "$PG_BIN/postgres"
    copy_with_libs "$pir" "$PG_BIN/psql"
    share=$("$PG_BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/${pgver%%.*}")
    pkglib=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "/usr/lib/postgresql/${pgver%%.*}/lib")
    cp -r --parents "$share" /usr/share/zoneinfo "$pir/"
    # postgres insists its library directory exists; PL/pgSQL is the one library it loads.
    mkdir -p "$pir$pkglib"
    cp "$pkglib/plpgsql.so" "$pir$pkglib/"
    # initdb as postgres into a directory it owns.
    tmpdata=$CACHE/pgdata-init
    rm -rf "$tmpdata" && mkdir -p "$tmpdata" && chown postgres: "$tmpdata"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$tmpdata/data" -U postgres --auth=trust \
      --locale=C -E UTF8 >/dev/null
    cp -a "$tmpdata/data" "$pir/pgdata"
    rm -rf "$tmpdata"
    chown postgres: "$pir/var/run/postgresql"
    pu=$(id -u postgres) pg=$(id -g postgres)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\npostgres:x:%s:%s:postgres:/pgdata:/bin/sh\n' \
      "$pu" "$pg" >"$pir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\npostgres:x:%s:\n' "$pg" >"$pir/etc/group"
    (cd "$pir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$PGARC.tmp")
    mv "$PGARC.tmp" "$PGARC"
    rm -rf "$pir"
  fi
fi

# Our binaries.
profile=${CRIU_VM_PROFILE:-debug}
if [[ -z ${CRIU_WRAP_BIN:-} || -z ${CRIU_WORKLOAD_BIN:-} ]]; then
  flag=(); [[ $profile == release ]] && flag=(--release)
  (cd "$ROOT" && cargo build -q "${flag[@]}" -p criu-wrap --bin criu-wrap --example criu-workload)
fi
target=${CARGO_TARGET_DIR:-$ROOT/target}
CRIU_WRAP_BIN=${CRIU_WRAP_BIN:-$target/$profile/criu-wrap}
CRIU_WORKLOAD_BIN=${CRIU_WORKLOAD_BIN:-$target/$profile/examples/criu-workload}
for b in "$CRIU_WRAP_BIN" "$CRIU_WORKLOAD_BIN"; do
  [[ -x $b ]] || pgs_die "$EX_UNAVAILABLE" "$b not found (cargo build -p criu-wrap --examples)"
done

top=$CACHE/ir-top-$$
rm -rf "$top"
mkdir -p "$top/usr/bin"
trap 'rm -rf "$top" "$CACHE/top-$$.cpio.gz"' EXIT
cp "$CRIU_WRAP_BIN" "$top/usr/bin/criu-wrap"
cp "$CRIU_WORKLOAD_BIN" "$top/usr/bin/criu-workload"
for b in "$CRIU_WRAP_BIN" "$CRIU_WORKLOAD_BIN"; do
  for l in $(ldd "$b" 2>/dev/null | grep -o '/[^ ]*'); do cp --parents -L "$l" "$top/"; done
done
cp "$GUEST" "$top/init"
chmod +x "$top/init"
(cd "$top" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$CACHE/top-$$.cpio.gz")
cat "$BASE" ${PGARC:+"$PGARC"} "$CACHE/top-$$.cpio.gz" >"$CACHE/initrd-$MODE.gz"

# Software emulation (TCG) by default: it works everywhere, including inside VMs whose nested
# KVM exists but crawls (seen here: a /dev/kvm that never finished booting). CRIU_VM_KVM=1
# tries KVM first.
accel=(-accel tcg)
[[ -n ${CRIU_VM_KVM:-} && -w /dev/kvm ]] && accel=(-accel kvm -accel tcg)
pgs_log "booting kernel $K (qemu ${accel[*]}, ${MEM} MiB, mode $MODE, timeout ${TIMEOUT}s)"
set +e
timeout "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -m "$MEM" -smp 1 \
  -kernel "$KROOT/boot/vmlinuz-$K" -initrd "$CACHE/initrd-$MODE.gz" \
  -append "console=ttyS0 panic=-1 loglevel=3 cw.mode=$MODE $EXTRA" \
  -nographic -no-reboot -nic none </dev/null | tee "$CACHE/console-$MODE.log"
rc=${PIPESTATUS[0]}
set -e
((rc == 124)) && pgs_die "$EX_TEMPFAIL" "the VM did not finish within ${TIMEOUT}s (console: $CACHE/console-$MODE.log)"
exit 0
