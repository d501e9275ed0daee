"""What a callgrind dump made with `--cache-sim=yes --branch-sim=yes --dump-instr=yes` says per
request beyond the instruction count: first-level cache misses for code and data, mispredicted
branches, callgrind's cycle estimate, and how much distinct code a request runs.

The last is the figure the instruction count hides. A request path that runs more distinct
code than the first-level instruction cache holds (64 KiB on the bench VM) fetches part of it
again on every request, whatever its instruction count. It is counted as the 64-byte code
lines executed at least once per request on average (`instructions.py --cache`).
"""
# callgrind_annotate's cycle estimate: a first-level miss costs about 10 cycles, a last-level
# miss about 100, a mispredicted branch about 10 (real costs vary; the weights are callgrind's).
WEIGHTS = {"I1mr": 10, "D1mr": 10, "D1mw": 10, "ILmr": 100, "DLmr": 100, "DLmw": 100, "Bcm": 10, "Bim": 10}


def figures(path, requests):
    """Per-request figures from one dump: a dict of events, the estimate and code KiB."""
    events, summary = None, None
    lines = {}
    obj, addr, skip = None, 0, False
    with open(path, errors="replace") as f:
        for line in f:
            head = line[:1]
            if head == "0" or head in "+-*":
                parts = line.split()
                pos = parts[0]
                if pos.startswith("0x"):
                    addr = int(pos, 16)
                elif pos[0] in "+-":
                    addr += int(pos, 0)
                if skip:  # the inclusive cost of a call, not code run here
                    skip = False
                    continue
                if len(parts) > 2:
                    key = (obj, addr >> 6)
                    lines[key] = lines.get(key, 0) + int(parts[2])
            elif line.startswith("calls="):
                skip = True
            elif line.startswith("ob="):
                obj = line[3:].split(")")[0]
            elif line.startswith("positions:") and "instr" not in line:
                raise SystemExit(f"{path}: no instruction addresses (was callgrind run with --dump-instr=yes?)")
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                summary = [int(x) for x in line.split()[1:]]
    if not events or not summary:
        raise SystemExit(f"{path}: no events or summary (was callgrind run with --cache-sim?)")
    per = {e: v / requests for e, v in zip(events, summary)}
    per["estimate"] = per.get("Ir", 0) + sum(w * per.get(e, 0) for e, w in WEIGHTS.items())
    per["code_kib"] = sum(64 for ir in lines.values() if ir >= requests / 2) / 1024
    return per


def describe(per):
    """One line for a listener's figures."""
    return (f"L1i misses {per.get('I1mr', 0):,.0f}, L1d misses {per.get('D1mr', 0) + per.get('D1mw', 0):,.0f}, "
            f"mispredicted branches {per.get('Bcm', 0) + per.get('Bim', 0):,.0f}, "
            f"estimated cycles {per['estimate']:,.0f}, code run {per['code_kib']:.0f} KiB")

