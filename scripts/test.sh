#!/usr/bin/env bash
# test.sh - popsync's test command: ./scripts/test.sh [go test flags] [packages]
#
# 1. Makes sure the real servers the integration tests start are installed
#    (Debian: dovecot-core dovecot-pop3d dovecot-lmtpd dovecot-imapd openssl postfix
#    postgresql, and the shells, groff and systemd-analyze that check
#    popsync's completion, man page and service units, and fetchmail
#    getmail6 mpop for the import tests;
#    postfix is preseeded with "No configuration" and postgresql-common told
#    not to create its "main" cluster, so no system instance is set up: the
#    tests start private ones). As root it
#    installs the missing ones with apt-get; as another user it prints what
#    is missing and goes on (those tests then skip, or fail when
#    POPSYNC_REQUIRE_REAL=1).
# 2. As root, creates the unprivileged system user the test harness runs
#    Dovecot as (popsynctest; Dovecot must not run as root).
# 3. Runs `go vet` and `go test -race -count=1` on the packages (default
#    ./...). Other arguments go to `go test` unchanged, so
#    `./scripts/test.sh -run TestPoll ./fetch/...` works.
#
# Exit status: the tests' status; a vet failure alone makes it 1.
# Environment: POPSYNC_REQUIRE_REAL=1 turns "skip when missing" into failure
# (CI sets it); POPSYNC_TEST_NO_INSTALL=1 never calls apt-get.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PKGS=(dovecot-core dovecot-pop3d dovecot-lmtpd dovecot-imapd openssl postfix
  postgresql                        # state/postgres: the tests run a private cluster
  fetchmail getmail6 mpop           # cmd/popsync: the import tests run the real tools
  bash zsh fish groff-base systemd)  # cmd/popsync: completion, man page and unit checks
TEST_USER=popsynctest

say() { printf '[test.sh] %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

missing_pkgs() {
  local p
  command -v dpkg-query >/dev/null 2>&1 || { printf '%s\n' "${PKGS[@]}"; return; }
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

install_pkgs() {  # packages...
  local rc=0 made_policy=0
  # Keep apt from starting the system Dovecot (it would listen on *:110,
  # *:143, *:993, *:995): invoke-rc.d and deb-systemd-invoke both obey
  # policy-rc.d, and 101 means "action forbidden". Images that already ship
  # one keep theirs; ours is removed again afterwards, also on interrupt.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    trap 'exit 130' INT TERM
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Postfix: no /etc/postfix/main.cf and no system instance; the tests
  # (internal/realtest) run private instances with their own config.
  if command -v debconf-set-selections >/dev/null 2>&1; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  fi
  # PostgreSQL: no system cluster; the tests (internal/realtest) run
  # private ones with initdb. An existing createcluster.conf is kept.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
  {
    apt-get update -q &&
    apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
  } >&2 || rc=$?
  if [ "$made_policy" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT INT TERM
  fi
  return "$rc"
}

# ------------------------------------------------------------ real servers
mapfile -t missing < <(missing_pkgs)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]} and there is no apt-get: install Dovecot (POP3, LMTP and IMAP), Postfix and PostgreSQL yourself; real-server tests will skip"
  elif ! is_root; then
    say "missing: ${missing[*]}"
    say "install with: sudo apt-get install --no-install-recommends ${missing[*]}"
    say "continuing: the real-server tests will skip"
  elif [ "${POPSYNC_TEST_NO_INSTALL:-0}" = 1 ]; then
    say "missing ${missing[*]}; POPSYNC_TEST_NO_INSTALL=1, not installing"
  else
    say "installing: ${missing[*]}"
    if ! install_pkgs "${missing[@]}"; then
      say "apt-get failed"
      if [ "${POPSYNC_REQUIRE_REAL:-0}" = 1 ]; then exit 1; fi
      say "continuing: the real-server tests will skip"
    fi
  fi
fi

# Dovecot lives in /usr/sbin, which is not on every user's PATH; the Go
# harness looks there too. Say which version the tests run against.
dovecot_bin=$(PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v dovecot || true)
if [ -n "$dovecot_bin" ]; then
  say "dovecot $("$dovecot_bin" --version 2>/dev/null || echo '(version unknown)') at $dovecot_bin"
fi
# Debian keeps the PostgreSQL server programs off $PATH, in
# /usr/lib/postgresql/<version>/bin; the Go harness picks the newest.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ]; then
  say "$("$pg_bin/postgres" --version) at $pg_bin"
fi

# ------------------------------------------------------------ test user
if is_root && ! id "$TEST_USER" >/dev/null 2>&1; then
  say "creating system user $TEST_USER (runs the test Dovecot instances)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
          --shell /usr/sbin/nologin "$TEST_USER"
fi

# ------------------------------------------------------------ go
# Arguments that name packages go to vet and test; everything else is a
# go test flag (or a flag's value) and goes to test only.
pkgs=()
flags=()
for a in "$@"; do
  case "$a" in
    .|./*|..|../*|popsync|popsync/*) pkgs+=("$a") ;;
    *) flags+=("$a") ;;
  esac
done
if [ "${#pkgs[@]}" -eq 0 ]; then pkgs=(./...); fi

command -v go >/dev/null 2>&1 || { say "no go on PATH"; exit 1; }
command -v gcc >/dev/null 2>&1 || say "no gcc: -race and go-sqlite3 need cgo; install gcc"
say "$(go version)"

vet_rc=0
say "go vet ${pkgs[*]}"
go vet "${pkgs[@]}" || vet_rc=$?

test_rc=0
say "go test -race -count=1 ${flags[*]:+${flags[*]} }${pkgs[*]}"
go test -race -count=1 "${flags[@]}" "${pkgs[@]}" || test_rc=$?

if [ "$test_rc" != 0 ]; then exit "$test_rc"; fi
if [ "$vet_rc" != 0 ]; then say "go vet failed"; exit 1; fi
exit 0
