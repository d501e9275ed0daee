#!/bin/sh
# A profile-guided release build of tokenproxy that needs nothing but a Rust toolchain with
# llvm-profdata (`rustup component add llvm-tools`): the container image's build step.
#
#   deploy/pgo-build.sh        # from anywhere; the binary is target/pgo/tokenproxy
#
# 1. builds the training driver (examples/pgo_train/) as a plain release example;
# 2. builds tokenproxy with -Cprofile-generate (target/pgo/generate);
# 3. runs the driver against it: an origin and token endpoint in the driver's own process, load
#    through the reverse and forward listeners, TLS origination, interception, h2c and DPoP, on
#    127.0.0.1 only, about 25 s; it fails, and so does this script, if any request failed;
# 4. merges the profile with llvm-profdata of rustc's LLVM version and builds with
#    -Cprofile-use (target/pgo/use), copied to target/pgo/tokenproxy.
# Same source, same settings as `cargo build --release`, about a quarter fewer instructions per
# proxied request (docs/performance.md, "A profile-guided build"). tests/e2e/pgo.py trains on the
# benchmark's real peers instead and can add BOLT; this script is the one without peers.
# PGO_TRAIN_SECONDS: the seconds of load a scenario (2).
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/target/pgo"
raw="$out/raw"
host=$(rustc -vV | sed -n 's/^host: //p')
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\)\..*/\1/p')
# llvm-profdata of rustc's own LLVM version (a profile of another version neither merges nor
# loads): $LLVM_PROFDATA, else rustup's llvm-tools, else Debian's llvm-<major> package.
profdata=${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata}
if [ -z "${LLVM_PROFDATA:-}" ] && [ ! -x "$profdata" ] && command -v "llvm-profdata-$llvm" >/dev/null; then
  profdata=$(command -v "llvm-profdata-$llvm")
fi
if ! "$profdata" merge --version 2>&1 | grep -q "LLVM version $llvm\."; then
  echo "pgo-build.sh: rustc uses LLVM $llvm; $profdata is missing or of another version." \
       "Run \`rustup component add llvm-tools\`, install llvm-$llvm, or set LLVM_PROFDATA" >&2
  exit 1
fi

echo "pgo-build.sh: the training driver"
cargo build --release --locked --example pgo_train

echo "pgo-build.sh: the instrumented build"
CARGO_TARGET_DIR="$out/generate" RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
  cargo build --release --locked --bin tokenproxy
# Build scripts and proc macros are instrumented too and ran during the build: only the
# training's profile is wanted.
rm -rf "$raw"

echo "pgo-build.sh: training"
"${CARGO_TARGET_DIR:-$root/target}/release/examples/pgo_train" "$out/generate/release/tokenproxy" \
  --seconds "${PGO_TRAIN_SECONDS:-2}"
"$profdata" merge -o "$out/tokenproxy.profdata" "$raw"

echo "pgo-build.sh: the guided build"
CARGO_TARGET_DIR="$out/use" RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$out/tokenproxy.profdata" \
  cargo build --release --locked --bin tokenproxy
cp "$out/use/release/tokenproxy" "$out/tokenproxy"
echo "pgo-build.sh: $out/tokenproxy"
