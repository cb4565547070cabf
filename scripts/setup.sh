#!/usr/bin/env bash
# Install what building omnic needs on Debian 12 (bookworm): LLVM/MLIR 22
# development packages (static archives that mlir-sys / llvm-sys link), a C++
# compiler for tblgen, and the optional MLIR/LLVM tools. Idempotent: when
# everything is already installed it only checks and exits (no apt-get update).
#
# Usage: scripts/setup.sh [--check] [--no-tools]
#   --check     only report what is missing; exit 1 if anything is
#   --no-tools  skip the optional tools (mlir-22-tools clang-22 lld-22)
#
# Everything lands in /usr/lib/llvm-22; .cargo/config.toml points the -sys
# crates there (MLIR_SYS_220_PREFIX, TABLEGEN_220_PREFIX, LLVM_SYS_221_PREFIX).
set -euo pipefail

LLVM_PREFIX=/usr/lib/llvm-22
LLVM_MAJOR=22
MIN_RUST=1.85

# Needed to build: the link fails without libpolly; g++ because tblgen compiles C++.
BUILD_PKGS=(llvm-22-dev libmlir-22-dev libpolly-22-dev libclang-22-dev zlib1g-dev libzstd-dev g++)
# Optional tools: mlir-opt-22 / mlir-translate-22, clang-22, ld.lld-22 (AMDGPU .hsaco linking).
TOOL_PKGS=(mlir-22-tools clang-22 lld-22)

check_only=0
with_tools=1
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --no-tools) with_tools=0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ---- platform --------------------------------------------------------------
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  die "this script needs a Debian system with apt (dpkg-query/apt-get not found).
  On other systems install LLVM 22 and MLIR 22 development files (static libraries,
  headers, llvm-config, mlir-tblgen) yourself and point MLIR_SYS_220_PREFIX,
  TABLEGEN_220_PREFIX and LLVM_SYS_221_PREFIX at that prefix."
fi
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  case " ${ID:-} ${ID_LIKE:-} " in
    *" debian "*) ;;
    *) die "not a Debian-based system (ID=${ID:-unknown}); see the comment at the top of this script." ;;
  esac
  if [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" != 12 ]; then
    say "warning: tested on Debian 12 (bookworm); this is Debian ${VERSION_ID:-unknown}."
  fi
fi

pkgs=("${BUILD_PKGS[@]}")
[ "$with_tools" = 1 ] && pkgs+=("${TOOL_PKGS[@]}")

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for p in "${pkgs[@]}"; do
  installed "$p" || missing+=("$p")
done

# ---- install what is missing -----------------------------------------------
if [ "${#missing[@]}" -eq 0 ]; then
  say "all ${#pkgs[@]} packages already installed"
elif [ "$check_only" = 1 ]; then
  die "missing packages: ${missing[*]} (run scripts/setup.sh as root to install them)"
else
  say "missing packages: ${missing[*]}"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      die "installing packages needs root: rerun as root (or with password-less sudo),
  or ask an administrator to run:
    apt-get install --no-install-recommends ${missing[*]}"
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  say "apt-get update"
  "${SUDO[@]}" apt-get update -q >/dev/null \
    || say "warning: apt-get update reported errors (above); continuing with the package lists it got"
  unavailable=()
  for p in "${missing[@]}"; do
    cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
      unavailable+=("$p")
    fi
  done
  if [ "${#unavailable[@]}" -gt 0 ]; then
    hint=""
    case " ${unavailable[*]} " in
      *"-${LLVM_MAJOR}"*)
        hint="
  Debian 12's own archive has no LLVM ${LLVM_MAJOR}; LLVM/MLIR ${LLVM_MAJOR} comes from the LLVM
  project's Debian repository for bookworm (llvm-toolchain-bookworm-${LLVM_MAJOR}).
  Add that repository (or a mirror of it) to /etc/apt/sources.list.d/, then rerun.
  Check with: apt-cache policy llvm-${LLVM_MAJOR}-dev" ;;
    esac
    die "the configured apt sources do not provide: ${unavailable[*]}${hint}"
  fi
  say "installing ${missing[*]} (about 235 MB download, 1.9 GB installed on a fresh machine)"
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed (see the messages above)"
fi

# ---- sanity checks ---------------------------------------------------------
llvm_config="$LLVM_PREFIX/bin/llvm-config"
[ -x "$llvm_config" ] || die "$llvm_config not found although llvm-${LLVM_MAJOR}-dev is installed"
llvm_version="$("$llvm_config" --version)"
case "$llvm_version" in
  "$LLVM_MAJOR".*) ;;
  *) die "$llvm_config reports version $llvm_version, expected ${LLVM_MAJOR}.x" ;;
esac
[ -x "$LLVM_PREFIX/bin/mlir-tblgen" ] || die "$LLVM_PREFIX/bin/mlir-tblgen not found (package libmlir-${LLVM_MAJOR}-dev)"
[ -e "$LLVM_PREFIX/lib/libMLIRCAPIIR.a" ] || die "$LLVM_PREFIX/lib/libMLIRCAPIIR.a not found (package libmlir-${LLVM_MAJOR}-dev)"
say "LLVM/MLIR $llvm_version in $LLVM_PREFIX"

if ! command -v cargo >/dev/null 2>&1; then
  die "cargo not found on PATH: install a Rust toolchain >= $MIN_RUST (rustup recommended) and rerun"
fi
rust_version="$(rustc --version 2>/dev/null | awk '{print $2}')"
if [ -n "$rust_version" ] && [ "$(printf '%s\n%s\n' "$MIN_RUST" "$rust_version" | sort -V | head -n1)" != "$MIN_RUST" ]; then
  die "rustc $rust_version is older than the required $MIN_RUST"
fi
say "cargo $(cargo --version | awk '{print $2}'), rustc ${rust_version:-unknown}"
say "ready: cargo build (the prefixes are set in .cargo/config.toml)"
