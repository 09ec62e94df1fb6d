#!/usr/bin/env bash
# compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over scripts/sanitize.py, which runs
# every kernel over ragged and minimum shapes and checks every result against an fp64 reference.
#
# Usage: bash scripts/sanitize.sh OUTDIR        (quanto_kernels installed and importable; on a GPU machine)
#        python tasks.py sanitize --out OUTDIR   (the same, through the task entry point)
# OUTDIR may also come from $OUT; without either, a new folder from mktemp is used and printed.
# Writes $OUT/sanitizer_summary.md (tool, exit code, error counts, where the errors are) and, per tool,
# $OUT/sanitizer_<tool>.log (the sanitizer's report) and sanitizer_<tool>.out (the driver's output).
# Exit status: 0 when every tool ran, the driver's results were right under it, and no tool reported an
# error in a quanto-kernels kernel or an uninitialised host copy; 1 otherwise; 2 without a sanitizer.
#
# Environment: SANITIZE_TOOLS (default: all four), SANITIZE_TIMEOUT (seconds per tool, default 270),
# SANITIZE_PARALLEL (1: the four tools run at once, each in its own process; 0: one after another),
# COMPUTE_SANITIZER (path to the binary), PYTHON (default python3).
#
# memcheck, racecheck and synccheck check our kernels only (--kernel-name kns=_ZN2qk: every kernel of
# the library lives in namespace qk); initcheck checks every kernel, so that memory written by torch's
# kernels counts as initialised, and its findings are split into ours and others'. Torch's caching
# allocator is disabled (PYTORCH_NO_CUDA_MEMORY_CACHING=1): every tensor is its own cudaMalloc, so
# memcheck sees exact bounds and initcheck sees fresh, uninitialised outputs.
set -uo pipefail
OUT="${1:-${OUT:-}}"
[[ -n "$OUT" ]] || OUT="$(mktemp -d "${TMPDIR:-/tmp}/qk-sanitize.XXXXXX")"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
echo "sanitizer output: $OUT"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
TOOLS="${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}"
LIMIT="${SANITIZE_TIMEOUT:-270}"
PARALLEL="${SANITIZE_PARALLEL:-1}"
SUMMARY="$OUT/sanitizer_summary.md"

find_sanitizer() {
  local c
  if [[ -n "${COMPUTE_SANITIZER:-}" && -x "${COMPUTE_SANITIZER}" ]]; then echo "$COMPUTE_SANITIZER"; return; fi
  if c="$(command -v compute-sanitizer 2>/dev/null)"; then echo "$c"; return; fi
  if c="$(command -v nvcc 2>/dev/null)"; then
    c="$(dirname "$(readlink -f "$c")")/compute-sanitizer"
    [[ -x "$c" ]] && { echo "$c"; return; }
  fi
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
           $(ls -d /usr/local/cuda-*/bin/compute-sanitizer 2>/dev/null | sort -V -r); do
    [[ -x "$c" ]] && { echo "$c"; return; }
  done
  return 1
}

CS="$(find_sanitizer)" || {
  printf '# compute-sanitizer\n\nNot run: no compute-sanitizer binary found (set COMPUTE_SANITIZER).\n' > "$SUMMARY"
  cat "$SUMMARY"
  exit 2
}
CS_VERSION="$("$CS" --version 2>&1 | grep -i -m1 version || true)"
GPU="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
echo "sanitizer: $CS ($CS_VERSION); GPU: $GPU; tools: $TOOLS; parallel=$PARALLEL, ${LIMIT}s per tool"

run_tool() {
  local tool="$1" start rc
  local args=(--tool "$tool" --error-exitcode 1 --print-limit 100 --log-file "$OUT/sanitizer_$tool.log")
  [[ "$tool" != initcheck ]] && args+=(--kernel-name kns=_ZN2qk)
  local skip_dense=""
  [[ "$tool" == racecheck || "$tool" == initcheck ]] && skip_dense=1  # see SKIP_DENSE in sanitize.py
  start=$(date +%s)
  SANITIZE_SKIP_DENSE="$skip_dense" PYTORCH_NO_CUDA_MEMORY_CACHING=1 CUDA_MODULE_LOADING=LAZY PYTHONUNBUFFERED=1 \
    timeout --kill-after=15 "$LIMIT" "$CS" "${args[@]}" "$PY" "$HERE/sanitize.py" > "$OUT/sanitizer_$tool.out" 2>&1
  rc=$?
  echo "$rc $(( $(date +%s) - start ))" > "$OUT/sanitizer_$tool.rc"
}

if [[ "$PARALLEL" == 1 ]]; then
  for tool in $TOOLS; do run_tool "$tool" & done
  wait
else
  for tool in $TOOLS; do run_tool "$tool"; done
fi

# Summary: counts from the sanitizer's report, with each reported error attributed to the kernel it
# names ("at ... in <function>"); host API errors (a copy reading uninitialised device memory) apart.
"$PY" - "$OUT" "$CS_VERSION" "$GPU" $TOOLS <<'EOF'
import re, sys, time
from pathlib import Path

out, cs_version, gpu, tools = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
SKIP = ("COMPUTE-SANITIZER", "ERROR SUMMARY", "RACECHECK SUMMARY", "LEAK SUMMARY", "Target application returned",
        "Error: process didn't terminate", "Saved host backtrace")


def read(name):
    p = out / name
    return p.read_text(errors="replace") if p.exists() else ""


def classify(log):
    """Report blocks -> (ours, host copies, API errors, {other kernel: count}, racecheck warnings)."""
    ours, host, api, others, warn = 0, 0, 0, {}, 0
    blocks, cur = [], None
    for line in log.splitlines():
        if re.match(r"^=+ \S", line):
            cur = [line]
            blocks.append(cur)
        elif cur is not None and line.startswith("="):
            cur.append(line)
    for b in blocks:
        head = b[0].split(" ", 1)[1].strip()
        if head.startswith(SKIP):
            continue
        text = "\n".join(b[:6])
        if head.startswith("Warning"):
            warn += 1
        elif head.startswith("Program hit"):
            api += 1
        elif head.startswith("Host API"):
            host += 1
        elif re.search(r"qk::|_ZN2qk", text):
            ours += 1
        else:
            at = re.search(r"\bat (?:0x[0-9a-f]+ in )?(.{1,90})", text)
            key = at.group(1) if at else head[:90]
            others[key] = others.get(key, 0) + 1
    return ours, host, api, others, warn


rows, ok, calls, limits = [], True, "?", "not reported"
for tool in tools:
    log, drv = read(f"sanitizer_{tool}.log"), read(f"sanitizer_{tool}.out")
    lim = re.search(r"SANITIZE_LIMITS fp8=(\d+) int4=(\d+)(?: int8=(\d+))?", drv)
    if lim:
        limits = f"FP8 Marlin M > {lim.group(1)}, int4 M > {lim.group(2)}"
        limits += f", int8 M > {lim.group(3)}" if lim.group(3) else ""
    rc, seconds = (read(f"sanitizer_{tool}.rc").split() + ["?", "?"])[:2]
    m = re.search(r"ERROR SUMMARY: (\d+) error", log)
    errors = int(m.group(1)) if m else None
    r = re.search(r"(\d+) errors?, (\d+) warnings?\)", log)
    if errors is None and r:
        errors = int(r.group(1))
    ours, host, api, others, warn = classify(log)
    if r:
        warn = max(warn, int(r.group(2)))
    c = re.search(r"SANITIZE_OK (\d+) calls", drv)
    driver_ok = c is not None
    calls = c.group(1) if c else calls
    timed_out = rc in ("124", "137")
    good = driver_ok and not timed_out and errors is not None and ours == 0 and host == 0
    ok = ok and good
    notes = []
    if timed_out:
        notes.append(f"timed out after {seconds} s")
    if not driver_ok:
        notes.append("driver: " + " / ".join([l for l in drv.splitlines() if l.strip()][-3:])[:300])
    if errors is None and not timed_out:
        notes.append("no ERROR SUMMARY in the log")
    if api:
        notes.append(f"{api} CUDA API error report(s) (see log)")
    notes += [f"{k} x{v}" for k, v in sorted(others.items(), key=lambda kv: -kv[1])[:4]]
    rows.append(f"| {tool} | {rc} | {errors if errors is not None else '?'} | {ours} | {host} | "
                f"{sum(others.values())} | {warn} | {'yes' if driver_ok else 'no'} | {seconds} | "
                f"{'PASS' if good else 'FAIL'} | {'; '.join(notes)} |")
text = [f"# compute-sanitizer run - {gpu}, {time.strftime('%Y-%m-%d')}", "",
        f"{cs_version}. Driver: `scripts/sanitize.py` ({calls} op calls over ragged and minimum shapes, each "
        "result checked against an fp64 reference), `PYTORCH_NO_CUDA_MEMORY_CACHING=1`; memcheck, racecheck and "
        "synccheck check the library's kernels only (`--kernel-name kns=_ZN2qk`), initcheck checks every kernel. "
        f"racecheck and initcheck skip the GEMM calls above the fused-kernel limits the library reports ({limits}; "
        "those run our dequantize kernel + cuBLAS, and the dequantize kernels are covered by their own calls): "
        "cuBLAS's TMA-written outputs are invisible to initcheck and crashed racecheck.",
        "",
        "| tool | exit code | errors (total) | in quanto-kernels kernels | uninitialised host copies | in other kernels "
        "| warnings | driver results right | seconds | verdict | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"Overall: {'PASS' if ok else 'FAIL'} (a tool passes when the driver's results are right under it and it "
        "reports nothing in a quanto-kernels kernel and no copy of uninitialised device memory). "
        "Logs: sanitizer_<tool>.log (report), sanitizer_<tool>.out (driver)."]
(out / "sanitizer_summary.md").write_text("\n".join(text) + "\n")
print("\n".join(text))
sys.exit(0 if ok else 1)
EOF
