#!/usr/bin/env bash
# One GPU-machine call: install + build (device_run.sh none), kernel-only floors, ncu of the FP8 kernels.
# Usage (device tool, carry .whl):  bash benchmarks/profile_run.sh
set -uo pipefail
OUT="${OUT:-/tmp/out}"
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/device_run.sh" none > "$OUT/install.txt" 2>&1 || { tail -30 "$OUT/install.txt"; exit 1; }
cd /tmp
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 "$here/kernel_floor.py" --out "$OUT" ${FLOOR_ARGS:-} > "$OUT/kernel_floor.txt" 2>&1; tail -12 "$OUT/kernel_floor.txt"
if [[ "${NCU:-1}" == 1 ]]; then
  PYTHONPATH="/tmp/site:$here" timeout 300 ncu --kernel-name regex:fp8_ --set full -f -o "$OUT/fp8" \
    python3 "$here/ncu_target.py" > "$OUT/ncu_log.txt" 2>&1
  ncu -i "$OUT/fp8.ncu-rep" --page details --csv > "$OUT/ncu_details.csv" 2>/dev/null
  ncu -i "$OUT/fp8.ncu-rep" --page details --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis > "$OUT/ncu_summary.txt" 2>&1
  grep -E "fp8_|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Stall|Compute \(SM\)" \
    "$OUT/ncu_summary.txt" | head -80
fi
# The device tool returns only a few files: pack the logs into one archive.
( cd "$OUT" && tar czf /tmp/logs.tgz --exclude='*.ncu-rep' . && find . -type f ! -name kernel_floor.json ! -name '*.ncu-rep' -delete && mv /tmp/logs.tgz . )
