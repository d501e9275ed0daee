#!/usr/bin/env python3
"""A profile-guided (PGO) release build of tokenproxy: the same source and settings as
`cargo build --release`, laid out and inlined by what a request really runs.

1. builds tokenproxy with `-Cprofile-generate` (target/pgo/generate);
2. runs `bench.py --all` against that build, a few seconds a scenario: plain reverse and
   forward at 64 connections and at one, the access log, the shared cache on Redis, DPoP,
   tracing, TLS origination, HTTPS interception, h2c in with HTTP/1.1 and h2c out (the
   benchmark's mix is the training: a path it never runs is laid out as cold);
3. merges the profiles with `llvm-profdata` of rustc's own LLVM version;
4. builds with `-Cprofile-use` (target/pgo/use) and copies the binary to target/pgo/tokenproxy.

With `--bolt`, step 4 links with `--emit-relocs` and BOLT (LLVM's post-link optimizer) lays the
guided binary out once more: it instruments the binary (target/pgo/bolt/instrumented), runs the
same training against it, and reorders its functions and blocks by that profile, hot code
together and cold blocks split out; the result is target/pgo/tokenproxy. It needs `llvm-bolt`
and `merge-fdata` of any recent LLVM (Debian's `bolt-<major>` package); about 3 minutes more.

Measure it with `bench.py --binary target/pgo/tokenproxy` or `instructions.py --binary ...`.
Needs what bench.py needs (nginx, wrk, ab, redis-server, h2load, openssl) and an llvm-profdata
whose LLVM major version is rustc's (`rustc -vV`): Debian's `llvm-<major>` package, or rustup's
`llvm-tools` component. About 11 minutes on a 2-core machine where `cargo build --release` has
run before (bench_https.py builds its TLS client there), most of it pgo.py's own two builds.

Usage: pgo.py [--duration 3] [--profile FILE] [--bolt]
  --profile  skip steps 1-3 and build with this merged profile (one made earlier by this script
             with the same source: a profile of other source still builds, but guides less)
  --bolt     then optimise the guided binary's layout with BOLT, as above
Everything the training runs listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "target", "pgo")


def llvm_major(text):
    """The major version in `rustc -vV`'s or `llvm-profdata merge --version`'s output, or None."""
    m = re.search(r"LLVM version:?\s+(\d+)\.", text)
    return int(m.group(1)) if m else None


def find_profdata(major):
    """An llvm-profdata of LLVM `major` (a profile from another major version does not merge or
    load), or SystemExit naming what was found and how to get the right one."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    found = []
    for candidate in [shutil.which(f"llvm-profdata-{major}"),
                      *glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "bin", "llvm-profdata")),
                      shutil.which("llvm-profdata")]:
        if not candidate:
            continue
        # `merge --version`: older llvm-profdata take no bare `--version`.
        out = subprocess.run([candidate, "merge", "--version"], capture_output=True, text=True)
        version = llvm_major(out.stdout + out.stderr)
        if version == major:
            return candidate
        found.append(f"{candidate} (LLVM {version})")
    raise SystemExit(f"pgo.py: rustc uses LLVM {major} and no llvm-profdata of that version was found"
                     f"{' (found: ' + ', '.join(found) + ')' if found else ''}; install Debian's "
                     f"llvm-{major} package or `rustup component add llvm-tools`")


def build(target_dir, rustflag):
    """`cargo build --release --locked --bin tokenproxy` with one more rustc flag, in its own
    target directory (other flags are another build of every crate)."""
    env = {**os.environ, "CARGO_TARGET_DIR": target_dir,
           "RUSTFLAGS": f"{os.environ.get('RUSTFLAGS', '')} {rustflag}".strip()}
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "tokenproxy"],
                   cwd=ROOT, env=env, check=True)
    return os.path.join(target_dir, "release", "tokenproxy")


def run_training(binary, duration, log, profiles):
    """`bench.py --all` against `binary`, its output in `log`: the paths of the profiles it
    wrote (those matching the glob `profiles`); SystemExit if it fails or wrote none."""
    print(f"pgo.py: training {os.path.relpath(binary, ROOT)} on bench.py --all ({duration} s a "
          f"scenario), output in {log}", flush=True)
    with open(log, "w") as f:
        ran = subprocess.run([sys.executable, os.path.join(HERE, "bench.py"), "--binary", binary, "--all",
                              "--runs", "1", "--duration", str(duration)], cwd=HERE, stdout=f,
                             stderr=subprocess.STDOUT)
    if ran.returncode != 0:
        raise SystemExit(f"pgo.py: the training run (bench.py --all) failed with status {ran.returncode}; "
                         f"see {log}")
    written = glob.glob(profiles)
    if not written:
        raise SystemExit(f"pgo.py: the training wrote no profile ({profiles}); see {log}")
    return written


def train(profdata, duration):
    """Steps 1-3: the merged profile's path."""
    raw = os.path.join(OUT, "raw")
    instrumented = build(os.path.join(OUT, "generate"), f"-Cprofile-generate={raw}")
    # Build scripts and proc macros are instrumented too and ran during the build: only the
    # benchmark's profile is wanted.
    shutil.rmtree(raw, ignore_errors=True)
    profiles = run_training(instrumented, duration, os.path.join(OUT, "train.log"),
                            os.path.join(raw, "*.profraw"))
    merged = os.path.join(OUT, "tokenproxy.profdata")
    subprocess.run([profdata, "merge", "-o", merged, *profiles], check=True)
    return merged


def find_bolt_tool(name):
    """`llvm-bolt` or `merge-fdata`: unversioned, else the newest `<name>-<major>`. BOLT reads
    machine code, so any recent LLVM's will do; SystemExit if there is none."""
    versioned = []
    for path in os.environ.get("PATH", "").split(os.pathsep):
        for candidate in glob.glob(os.path.join(path, f"{name}-[0-9]*")):
            suffix = candidate.rsplit("-", 1)[1]
            if suffix.isdigit() and os.access(candidate, os.X_OK):
                versioned.append((int(suffix), candidate))
    found = shutil.which(name) or (max(versioned)[1] if versioned else None)
    if not found:
        raise SystemExit(f"pgo.py: --bolt needs {name}; install Debian's bolt-<major> package "
                         f"(e.g. bolt-22) or LLVM's own build of BOLT")
    return found


def logged(argv, log, stdout=None):
    """Runs `argv` with its messages in `log` (and its output in `stdout`, if given); SystemExit
    naming the log if it fails."""
    with open(log, "w") as f:
        ran = subprocess.run(argv, stdout=stdout or f, stderr=f)
    if ran.returncode != 0:
        raise SystemExit(f"pgo.py: {os.path.basename(argv[0])} failed with status {ran.returncode}; see {log}")


def bolt(binary, duration, llvm_bolt, merge_fdata):
    """Lays the guided `binary` (linked with --emit-relocs) out again by what the training runs:
    instrument, train, merge, optimise. Returns the optimised binary's path."""
    work = os.path.join(OUT, "bolt")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    instrumented = os.path.join(work, "instrumented")
    # One profile file per process (bench.py starts several), written when the process exits.
    # BOLT warns about some of ring's assembly functions and leaves them as they are.
    logged([llvm_bolt, binary, "-instrument", f"--instrumentation-file={work}/prof",
            "--instrumentation-file-append-pid", "-o", instrumented], os.path.join(work, "instrument.log"))
    profiles = run_training(instrumented, duration, os.path.join(work, "train.log"),
                            os.path.join(work, "prof.*.fdata"))
    merged = os.path.join(work, "merged.fdata")
    with open(merged, "w") as out:
        logged([merge_fdata, *profiles], os.path.join(work, "merge.log"), stdout=out)
    optimised = os.path.join(work, "tokenproxy")
    # Safe folding only: a function whose address is taken keeps an address of its own.
    logged([llvm_bolt, binary, "-o", optimised, f"-data={merged}", "-reorder-blocks=ext-tsp",
            "-reorder-functions=cdsort", "-split-functions", "-split-all-cold", "-split-eh", "-icf=safe",
            "-use-gnu-stack", "-dyno-stats"], os.path.join(work, "bolt.log"))
    return optimised


def main():
    ap = argparse.ArgumentParser(description="a profile-guided release build of tokenproxy")
    ap.add_argument("--duration", type=int, default=3, help="seconds of load a benchmark scenario")
    ap.add_argument("--profile", help="build with this merged .profdata instead of training")
    ap.add_argument("--bolt", action="store_true", help="then lay the guided binary out with BOLT")
    args = ap.parse_args()
    major = llvm_major(subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout)
    if major is None:
        raise SystemExit("pgo.py: `rustc -vV` names no LLVM version")
    # Found first, so that a missing tool is said before the builds, not after them.
    bolt_tools = (find_bolt_tool("llvm-bolt"), find_bolt_tool("merge-fdata")) if args.bolt else None
    os.makedirs(OUT, exist_ok=True)
    started = time.monotonic()
    if args.profile:
        merged = os.path.abspath(args.profile)
        if not os.path.isfile(merged):
            raise SystemExit(f"pgo.py: no profile at {merged}")
    else:
        merged = train(find_profdata(major), args.duration)
    # BOLT moves functions only in a binary that keeps its relocations.
    relocs = " -Clink-arg=-Wl,--emit-relocs" if args.bolt else ""
    binary = build(os.path.join(OUT, "use"), f"-Cprofile-use={merged}{relocs}")
    if args.bolt:
        binary = bolt(binary, args.duration, *bolt_tools)
    final = os.path.join(OUT, "tokenproxy")
    shutil.copy2(binary, final)
    print(f"pgo.py: {final} ({os.path.getsize(final) / 2**20:.1f} MiB"
          f"{', laid out by BOLT' if args.bolt else ''}), profile {merged}, "
          f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
