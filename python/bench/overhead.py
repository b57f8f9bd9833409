"""Python-side overhead of the kvblockd binding, against kvblockd-bench (C++), same daemon, same run.

    python python/bench/overhead.py [--build build/release] [--duration 5] [--reps 3]

One kvblockd; for each mix (lookup of a 16-block prefix, offload of 1 block under a
fresh hash, onboard of 4 blocks) it alternates `kvblockd-bench load --sessions 1
--mix M` (the C++ client) and the same request pattern from Python (kvblockd.Client,
one session, closed loop: the same shape, region, hashes per request), --reps times,
and prints the medians and python/C++ ratios. Blocks of 2 MiB by default
(1 layer, K+V, 16 tokens, inner 32768, f16). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import kvblockd
from kvblockd.testing import DaemonProcess

PREFIX = 16
ONBOARD = 4


def mix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def cpp_run(bench: str, socket: str, mix: str, args: argparse.Namespace) -> float:
    out = subprocess.run([bench, "load", "--socket", socket, "--sessions", "1", "--duration", str(args.duration),
                          "--mix", mix, "--baseline", "off", "--layers", str(args.layers), "--page-size",
                          str(args.page_size), "--inner-dim", str(args.inner_dim), "--prefix-blocks", str(PREFIX),
                          "--onboard-blocks", str(ONBOARD)],
                         check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["ops_per_s"])


def python_run(socket: str, mix: str, args: argparse.Namespace, salt: int) -> float:
    shape = kvblockd.BlockShape(num_layers=args.layers, page_size=args.page_size, inner_dim=args.inner_dim,
                                dtype="f16")
    region = kvblockd.KvRegion.create(shape, "fully_contiguous", PREFIX + 1)
    with kvblockd.connect(socket) as c:
        c.hello(shape, tenant_salt=salt, client_name="overhead-py")
        c.register_kv(region)
        prefix = [mix64(salt * 1000 + i) for i in range(PREFIX)]
        c.offload(range(PREFIX), prefix)
        ops, counter = 0, 0
        deadline = time.perf_counter() + args.duration
        t0 = time.perf_counter()
        while time.perf_counter() < deadline:
            if mix == "lookup":
                if c.lookup(prefix).prefix_blocks != PREFIX:
                    raise RuntimeError("lookup missed the prefix")
            elif mix == "onboard":
                c.onboard(range(ONBOARD), prefix[:ONBOARD])
            else:
                counter += 1
                c.offload([PREFIX], [mix64((salt << 32) ^ counter ^ 0x0FF10AD)])
            ops += 1
        return ops / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build/release")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--inner-dim", type=int, default=32768)
    p.add_argument("--mixes", default="lookup,offload,onboard")
    args = p.parse_args()
    build = Path(args.build)
    bench = str(build / "bench" / "kvblockd-bench")
    block_bytes = args.layers * 2 * args.page_size * args.inner_dim * 2
    per_op = {"lookup": 0, "offload": block_bytes, "onboard": ONBOARD * block_bytes}
    result: dict[str, object] = {"block_bytes": block_bytes}
    with DaemonProcess(str(build / "daemon" / "kvblockd"), ["--log-level", "info"]) as d:
        print(f"kvblockd at {d.socket}; blocks of {block_bytes / 2**20:.2f} MiB; {args.reps} x {args.duration} s each")
        print(f"{'mix':8} {'C++ ops/s':>12} {'Python ops/s':>13} {'C++ GB/s':>9} {'Py GB/s':>8} {'py/C++':>7}")
        for mix in args.mixes.split(","):
            cpp, py = [], []
            for rep in range(args.reps):
                cpp.append(cpp_run(bench, d.socket, mix, args))
                py.append(python_run(d.socket, mix, args, salt=7000 + rep * 10 + len(mix)))
            c, q = statistics.median(cpp), statistics.median(py)
            ratio = q / c if c else float("nan")
            gb = lambda ops: ops * per_op[mix] / 1e9  # noqa: E731
            print(f"{mix:8} {c:12,.0f} {q:13,.0f} {gb(c):9.2f} {gb(q):8.2f} {ratio:7.3f}   "
                  f"(runs C++ {[round(x) for x in cpp]}, Python {[round(x) for x in py]})")
            result[mix] = {"cpp_ops_per_s": c, "python_ops_per_s": q, "ratio": ratio,
                           "cpp_gb_per_s": gb(c), "python_gb_per_s": gb(q)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
