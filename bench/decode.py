"""Is a format's kernel bound by decoding or by memory?  Decode rate of every format against the rate
one core could stream its bytes.

    python bench/decode.py                        # every block format pylin reads
    python bench/decode.py --formats IQ3_S,Q4_0   # a few
    python bench/decode.py --smoke                # two formats, seconds; no results file

Per format: one thread decodes 64 rows of 4096 weights (L2-resident, so no memory traffic) with the
active ISA's block decoders (kernels.dequantize), timed by the thread's CPU time (median of repeats):
weights per second.  Baseline, same process: one thread streaming a 256 MB float32 array (a torch add,
read + write, CPU time too), as bytes per second; weights per second that stream could feed = stream
rate / bytes per weight.  A format whose decode rate is below its feed rate is decode-bound at M = 1
(the small-M kernels decode every weight once per call and do one multiply-add per activation row).
Writes bench/results/decode-<date>-<commit>.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import add_output_args, print_table, write_results, writes_results

from pylin import kernels, synthetic
from pylin.qtensor import block_layout


def cpu_ms(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        samples.append(time.thread_time() - t0)
    return float(np.median(samples)) * 1e3


def stream_bytes_per_s(mb: int) -> float:
    a = torch.ones(mb << 18)
    b = torch.empty_like(a)
    ms = cpu_ms(lambda: torch.add(a, 1.0, out=b), 5)
    return 2 * a.numel() * 4 / (ms / 1e3)  # one read and one write per element


def run(formats: list[str], rows: int, k: int, repeats: int, stream_mb: int) -> list[dict]:
    torch.set_num_threads(1)  # the kernels follow torch's thread count
    stream = stream_bytes_per_s(stream_mb)
    out = []
    for qtype in formats:
        w = synthetic.random_qtensor(qtype, (rows, k), 0.02, seed=0)
        ms = cpu_ms(lambda w=w: kernels.dequantize(w), repeats)
        block_size, block_bytes = block_layout(qtype)
        decode = rows * k / (ms / 1e3)
        feed = stream / (block_bytes / block_size)
        out.append({
            "format": qtype, "bits_per_weight": 8 * block_bytes / block_size, "decode_gw_s": decode / 1e9,
            "stream_feed_gw_s": feed / 1e9, "decode_over_feed": decode / feed,
            "bound": "decode" if decode < feed else "memory", "stream_gb_s": stream / 1e9,
        })  # fmt: skip
        print(
            f"{qtype:7s} decode {decode / 1e9:6.2f} Gweights/s, memory could feed {feed / 1e9:6.2f}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default=",".join(sorted(synthetic.FP16_SCALE_FIELDS)))
    ap.add_argument("--repeats", type=int, default=15)
    add_output_args(ap)
    args = ap.parse_args(argv)
    formats = ["Q4_0", "IQ2_XS"] if args.smoke else args.formats.split(",")
    rows = run(
        formats, 8 if args.smoke else 64, 4096, 3 if args.smoke else args.repeats, 16 if args.smoke else 256
    )
    print(
        f"\none thread streams {rows[0]['stream_gb_s']:.1f} GB/s (torch add: read + write), "
        f"ISA {kernels.isa()}"
    )
    print_table(
        sorted(rows, key=lambda r: -r["decode_gw_s"]),
        [("format", "format", ""), ("bits_per_weight", "bits/weight", ".3f"),
         ("decode_gw_s", "decode Gw/s", ".2f"), ("stream_feed_gw_s", "feed Gw/s", ".2f"),
         ("decode_over_feed", "decode/feed", ".2f"), ("bound", "bound", "")],
    )  # fmt: skip
    if writes_results(args):
        extra = {"isa": kernels.isa(), "clock": "thread CPU time",
                 "note": "shared machine: see loadavg_1_5_15"}  # fmt: skip
        print(f"\nwrote {write_results('decode', rows, 1, extra, tag=args.tag)}")


if __name__ == "__main__":
    main()
