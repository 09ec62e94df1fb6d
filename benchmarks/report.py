"""Turns the JSON of bench_linear.py (ours + upstream modes) and flux_step.py into one markdown
report, a merged JSON and a PNG plot (time vs M per competitor). Runs anywhere (no GPU needed).

    python benchmarks/report.py --inp <dir with linear_ours.json ...> --out benchmarks/results --tag h100_2026-11-24
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Ceilings for the floor column; replaced by kernel_floor.json's measured ones when that file is present.
COPY_TBPS = 3.0  # device-to-device copy (bytes read + written)
MMA_TFLOPS = 800.0  # bf16 matrix product through cuBLAS


def floor_ms(m, k, n, weight_bytes):
    return max((n * k * weight_bytes + 2 * m * k + 2 * m * n) / (COPY_TBPS * 1e12), 2 * m * n * k / (MMA_TFLOPS * 1e12)) * 1e3


def fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}"


def linear_table(ours, upstream):
    up = {(r["M"], r["K"], r["N"]): r for r in (upstream or {}).get("rows", [])}
    lines = ["| M×K×N | bf16 dense | ours fp8 bf16 / fp16 | upstream fp8 bf16 / fp16 | fallback fp8 bf16 / fp16 | "
             "ours AWQ int4 | upstream AWQ int4 | floor fp8 | ours fp8 bf16: GB/s, TFLOP/s | ours÷dense | ours÷upstream | "
             "ours÷fallback |", "|" + "---|" * 13]
    for r in ours["rows"]:
        m, k, n = r["M"], r["K"], r["N"]
        u = up.get((m, k, n), {})
        t = r["ours_fp8_bf16"]
        gbps = (n * k + 2 * m * k + 2 * m * n) / (t * 1e-3) / 1e9
        tflops = 2 * m * n * k / (t * 1e-3) / 1e12
        ub = u.get("upstream_fp8_bf16")
        lines.append(
            f"| {m}×{k}×{n} | {fmt(r['dense_bf16'])} | {fmt(t)} / {fmt(r['ours_fp8_fp16'])} | "
            f"{fmt(ub)} / {fmt(u.get('upstream_fp8_fp16'))} | {fmt(r['fallback_fp8_bf16'])} / {fmt(r['fallback_fp8_fp16'])} | "
            f"{fmt(r['ours_awq_int4_fp16'])} | {'crash (not run)' if u and u.get('upstream_awq_int4_fp16') is None else fmt(u.get('upstream_awq_int4_fp16'))} | "
            f"{fmt(floor_ms(m, k, n, 1))} | {gbps:.0f}, {tflops:.0f} | {ratio(t, r['dense_bf16'])} | {ratio(t, ub)} | "
            f"{ratio(t, r['fallback_fp8_bf16'])} |")
    return "\n".join(lines)


def kernel_table(kf):
    """Kernel-only times (CUDA-graph replays, benchmarks/kernel_floor.py) against the copy ceiling."""
    copy = kf["ceilings"]["copy_GBps"]
    lines = [f"Ceilings measured in the same session: device copy {copy:.0f} GB/s (read + write), bf16 matrix product "
             f"{kf['ceilings']['bf16_mm_TFLOPs']:.0f} TFLOP/s. '% copy' = fp8 weight bytes / time / copy ceiling.", "",
             "| K×N (bf16) | dequantize GB/s (% copy) | M=1 ours / dense ms (% copy) | M=16 ours / dense | "
             "M=64 ours / dense | M=256 ours / dense | M=4096 ours / dense (ratio) |", "|---|---|---|---|---|---|---|"]
    for r in kf["rows"]:
        def pair(m):
            return f"{r[f'ours_M{m}_ms']:.4f} / {r[f'dense_M{m}_ms']:.4f}"
        big = r["ours_M4096_ms"] / r["dense_M4096_ms"]
        lines.append(f"| {r['K']}×{r['N']} | {r['dequant_GBps']:.0f} ({100 * r['dequant_GBps'] / copy:.0f}%) | {pair(1)} "
                     f"({100 * r['ours_M1_GBps'] / copy:.0f}%) | {pair(16)} | {pair(64)} | {pair(256)} | {pair(4096)} "
                     f"({big:.3f}) |")
    return "\n".join(lines)


def plot(ours, upstream, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    series = {}
    for row in ours.get("sweep", []):
        for key in ("dense_bf16", "ours_fp8_bf16", "fallback_fp8_bf16", "ours_awq_int4_fp16"):
            series.setdefault(key, []).append((row["M"], row.get(key)))
    for row in (upstream or {}).get("sweep", []):
        for key in ("upstream_fp8_bf16", "upstream_awq_int4_fp16"):
            series.setdefault(key, []).append((row["M"], row.get(key)))
    for key, pts in series.items():
        pts = [(m, t) for m, t in pts if t is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    k, n = ours["sweep"][0]["K"], ours["sweep"][0]["N"]
    ax.set(xscale="log", yscale="log", xlabel="M (rows)", ylabel="ms per layer call (median)",
           title=f"{ours['meta']['gpu']}: quantized linear {k}→{n}, time vs M")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def flux_table(flux):
    if not flux:
        return ""
    bf = flux.get("bf16", {})
    lines = ["| variant | step time | vs bf16 | peak GPU memory | vs bf16 | rel. error vs bf16 | weight classes |",
             "|---|---|---|---|---|---|---|"]
    for name in ("bf16", "ours", "upstream", "fallback"):
        r = flux.get(name)
        if not r:
            continue
        lines.append(f"| {name} | {r['step_s']:.3f} s | {ratio(r['step_s'], bf.get('step_s'))}× | {r['peak_gib']:.1f} GiB | "
                     f"{ratio(r['peak_gib'], bf.get('peak_gib'))}× | {fmt(r.get('rel_err_vs_bf16'), 4)} | "
                     f"{', '.join(r['weight_classes'])} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inp", required=True)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    inp, out = Path(args.inp), Path(args.out)
    load = lambda name: json.loads((inp / name).read_text()) if (inp / name).exists() else None  # noqa: E731
    ours, upstream, flux = load("linear_ours.json"), load("linear_upstream.json"), load("flux_step.json")
    kf = load("kernel_floor.json")
    if kf:
        global COPY_TBPS, MMA_TFLOPS
        COPY_TBPS, MMA_TFLOPS = kf["ceilings"]["copy_GBps"] / 1e3, kf["ceilings"]["bf16_mm_TFLOPs"]
    meta = ours["meta"]
    md = [f"# Performance — {meta['gpu']}, {meta['date']}", "",
          f"torch {meta['torch']} (CUDA {meta['cuda']}), optimum-quanto {meta['quanto']}, quanto-kernels "
          f"{meta['quanto_kernels']}, {meta['platform']}. Per-layer times: quanto's own module called back to back "
          "as a model calls it (its Python dispatch included), rotating layers so weights are not L2-resident, CUDA "
          "events around blocks of 20 calls, median of the blocks. Floor = "
          f"max(bytes at {COPY_TBPS:.2f} TB/s, FLOPs at {MMA_TFLOPS:.0f} TFLOP/s) for an fp8 weight. 'upstream' = optimum-quanto's "
          "JIT-built kernels, 'fallback' = quanto without a CUDA extension (Windows today).", "",
          "## Per layer (ms)", "", linear_table(ours, upstream), ""]
    if kf:
        md += ["## Kernels alone (ms, CUDA-graph replays, no Python)", "", kernel_table(kf), ""]
    s_ours, s_up = load("startup_ours.json"), load("startup_upstream.json")
    if s_ours:
        md += ["## Start-up (fresh process, warm machine)", "",
               "| | import quanto_kernels | import optimum.quanto | quantize 4096×4096 + first matmul | "
               "quanto_kernels import + first matmul |", "|---|---|---|---|---|"]
        for name, s in (("ours", s_ours), ("upstream (JIT build, cold)", s_up)):
            if s:
                qk = s.get("import_quanto_kernels_s")
                md.append(f"| {name} | {fmt(qk)} s | {fmt(s.get('import_quanto_s', s['import_quanto_kernels_and_quanto_s']))} s"
                          f" | {s['quantize_and_first_matmul_s']:.2f} s | "
                          f"{fmt(None if qk is None else qk + s['quantize_and_first_matmul_s'])} s |")
        md.append("")
    if flux:
        md += ["## FLUX.1-dev transformer step (1024×1024, random bf16 weights)", "", flux_table(flux), ""]
    if ours.get("sweep"):
        png = out / f"perf_{args.tag}.png"
        plot(ours, upstream, png)
        md += ["## Time vs M", "", f"![time vs M]({png.name})", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"perf_{args.tag}.md").write_text("\n".join(md))
    (out / f"perf_{args.tag}.json").write_text(
        json.dumps({"ours": ours, "upstream": upstream, "flux": flux, "kernel_floor": kf}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
