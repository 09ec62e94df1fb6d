"""quanto-kernels benchmark: one command, one GPU, every competitor, one summary.

    python benchmarks/run.py --out DIR [--part layers|sweep|flux|all|report] [--gpu-tag h200] [--budget-s N]

Competitors (each in its own subprocess, benchmarks/worker.py):
  ours      optimum-quanto with `import quanto_kernels`
  upstream  optimum-quanto's own JIT-built CUDA extension (QUANTO_KERNELS_DISABLE=1); built once per run
            (timed) before the first upstream measurement
  fallback  optimum-quanto without a CUDA extension (its pure-PyTorch paths, what Windows users get)
  dense     nn.Linear in bf16/fp16;  torchao  float8 weight-only (float8 dynamic row-wise for FLUX)

Parts:
  layers  per-layer kernel_ms (CUDA-graph replay, layers rotated past L2) and layer_ms (eager, back to back)
          for the formats fp8, int8, int4_awq, int4_bf16 (+ fp8_compute when quanto_kernels has that mode)
          over the rows of summary.ROWS                                                     (~5-6 min on H200)
  sweep   kernel time vs M at 4096x14336, fp8 weights, bf16 activations: ours, dense, upstream (~2-3 min)
  flux    FLUX.1-dev transformer step at 1024x1024, one subprocess per variant           (~8-9 min)
  all     layers + sweep + flux (more than 10 minutes: prefer separate commands)
  report  no GPU: merge OUT's summary with --merge files and rewrite the markdown and plot

Everything lands in OUT (flat, at most 5 files): summary_<tag>.json / .md / .png, run_<tag>.log (workers'
output) and flux_ref_<tag>.pt (the eager bf16 FLUX output the other variants are compared with). A
summary already in OUT (or given with --merge) is merged: measured values replace nulls and older values,
nulls never erase a measurement. The summary is rewritten after every subprocess, so a run that is killed
still leaves what it measured.

--budget-s: no new variant or measurement starts after that many seconds (they are recorded as null with
a "budget" note); the running subprocess is stopped shortly after. The summary is always written.

The commit recorded is QUANTO_KERNELS_GIT_REV if set, else the installed package's build record, else git.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import summary as S  # noqa: E402
from worker import FP8_COMPUTE_APIS  # noqa: E402

DEFAULT_BUDGET = {"layers": 450, "sweep": 200, "flux": 510, "report": 0}
GRACE_S = 25  # a worker past the deadline gets this long to finish its measurement before it is killed
MAX_RESTARTS = 3  # new worker processes after crashes, per environment


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ metadata
def package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        line = out.stdout.strip().splitlines()[0]
        name, drv = [x.strip() for x in line.split(",")[:2]]
        return name, drv
    except Exception:  # noqa: BLE001
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        m = re.search(r"Kernel Module\s+([\d.]+)", text)
        return None, m.group(1) if m else None
    except OSError:
        return None, None


def commit_of_measured_code():
    rev = os.environ.get("QUANTO_KERNELS_GIT_REV")
    if rev:
        return rev
    try:
        import importlib.util

        spec = importlib.util.find_spec("quanto_kernels")
        if spec and spec.origin:
            record = Path(spec.origin).parent / "build_record.json"
            if record.is_file():
                rev = json.loads(record.read_text()).get("git_revision")
                if rev:
                    return rev
    except Exception:  # noqa: BLE001
        pass
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def versions():
    _, drv = driver_version()
    return {"torch": package_version("torch"), "optimum-quanto": package_version("optimum-quanto"), "driver": drv,
            "diffusers": package_version("diffusers"), "torchao": package_version("torchao"),
            "quanto-kernels": package_version("quanto-kernels"), "python": sys.version.split()[0]}


# ------------------------------------------------------------------------------------------ tasks
def layer_plan(parts, formats, rows=S.ROWS):
    """{(side, format, act, K, N): set of (M, metric)} for the parts asked."""
    plan = {}

    def need(side, fmt, act, k, n, m, metric):
        plan.setdefault((side, fmt, act, k, n), set()).add((m, metric))

    if "layers" in parts:
        for fmt in formats:
            for act in S.ACTS[fmt]:
                for m, k, n in rows:
                    for metric in ("kernel", "layer"):
                        need("ours", fmt, act, k, n, m, metric)
                        need("dense", "dense", act, k, n, m, metric)
                        if fmt == "fp8":
                            need("torchao", "fp8", act, k, n, m, metric)
                        if fmt in ("fp8", "int4_awq"):  # where quanto routes to its extension's kernels
                            need("upstream", fmt, act, k, n, m, metric)
                    if fmt != "fp8_compute":
                        need("fallback", fmt, act, k, n, m, "layer")
    if "sweep" in parts:
        k, n = S.SWEEP_KN
        for m in S.SWEEP_MS:
            for side, fmt in (("ours", S.SWEEP_FORMAT), ("dense", "dense"), ("upstream", S.SWEEP_FORMAT)):
                need(side, fmt, S.SWEEP_ACT, k, n, m, "kernel")
    return plan


def risky(side, fmt, m):
    """Measurements that may take the process down: quanto's AWQ GEMV (M < 8) has faulted before."""
    return side == "upstream" and fmt == "int4_awq" and m < 8


def layer_tasks(plan, side):
    tasks, late = [], []
    for (s, fmt, act, k, n), items in sorted(plan.items()):
        if s != side:
            continue
        items = sorted(items)
        safe = [list(i) for i in items if not risky(s, fmt, i[0])]
        bad = [list(i) for i in items if risky(s, fmt, i[0])]
        base = {"kind": "layers", "side": s, "format": fmt, "act": act, "K": k, "N": n}
        if safe:
            tasks.append(dict(base, id=f"{s}/{fmt}/{act}/{k}x{n}", measure=safe))
        if bad:
            late.append(dict(base, id=f"{s}/{fmt}/{act}/{k}x{n}/small-M", measure=bad))
    return tasks + late  # risky ones last: a crash there costs nothing else


# What a budget cut should spare first: the reference, our main path and the required compiled rows,
# then the other formats and competitors (upstream late, so its background JIT build has finished).
FLUX_ORDER = [("bf16", False), ("fp8", False), ("bf16", True), ("fp8", True), ("int8", False), ("int4", False),
              ("fp8_compute", False), ("torchao_fp8dq", False), ("fp8_compute", True), ("torchao_fp8dq", True),
              ("int8", True), ("upstream_fp8", False), ("fallback_fp8", False), ("fallback_int8", False)]


def flux_priority(variant, compiled):
    try:
        return FLUX_ORDER.index((variant, compiled))
    except ValueError:
        return len(FLUX_ORDER)


def key_str(key):
    return "|".join(str(x) for x in key)


# ------------------------------------------------------------------------------------------ runner
class Runner:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tag = args.gpu_tag
        self.t0 = time.time()
        self.deadline = self.t0 + args.budget_s
        self.work = Path(tempfile.mkdtemp(prefix="qk-bench-"))
        self.logfile = self.out / f"run_{self.tag}.log"
        self.values = {}  # key_str -> (value, note)
        self.infos = {}
        self.task_notes = {}
        self.flux_rows = []
        self.meta = {}
        self.ceilings = {}
        self.build = None
        self.notes = []
        self.existing = None
        self.last = None
        self.parts_done = set()
        self.fp8_compute_api = None
        self.fp8_compute_known = False
        self.env = dict(os.environ)
        self.env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.work / "inductor"))
        self.env.setdefault("TRITON_CACHE_DIR", str(self.work / "triton"))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        if not shutil.which("ninja"):  # quanto's JIT build needs ninja on PATH; the ninja wheel has one
            try:
                import ninja

                self.env["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{self.env.get('PATH', '')}"
            except Exception:  # noqa: BLE001
                pass

    def remaining(self):
        return self.deadline - time.time()

    # -------------------------------------------------------------------- subprocesses
    def run_worker(self, env_kind, tasks, label, timeout_s=None):
        """Runs `tasks` in fresh worker processes of `env_kind` until each task is done or charged with a crash.
        Returns the parsed events of all processes."""
        events = []
        pending = list(tasks)
        restarts = 0
        while pending:
            if self.remaining() <= 0:
                for t in pending:
                    events.append({"ev": "error", "task": t["id"], "note": "budget"})
                    events.append({"ev": "done", "task": t["id"]})
                break
            n = len(list(self.work.glob("tasks_*.json")))
            tfile, rfile = self.work / f"tasks_{n}.json", self.work / f"results_{n}.jsonl"
            tfile.write_text(json.dumps(pending))
            rfile.write_text("")
            env = dict(self.env)
            if env_kind in ("upstream", "fallback"):
                env["QUANTO_KERNELS_DISABLE"] = "1"
            if env_kind == "upstream":
                env.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
            cmd = [sys.executable, str(HERE / "worker.py"), "--env", env_kind, "--tasks", str(tfile),
                   "--results", str(rfile), "--deadline", str(self.deadline)]
            limit = self.remaining() + GRACE_S if timeout_s is None else min(timeout_s, self.remaining() + GRACE_S)
            rc, tail = self._spawn(cmd, env, limit, label)
            got = self._read_events(rfile)
            events += got
            done = {e["task"] for e in got if e.get("ev") == "done"}
            started = [e["task"] for e in got if e.get("ev") == "start"]
            fatal = next((e for e in got if e.get("ev") == "fatal"), None)
            pending_ids = [t["id"] for t in pending if t["id"] not in done]
            if not pending_ids:
                break
            culprit = next((t for t in reversed(started) if t not in done), None)
            if rc == "timeout":
                why = "budget (worker stopped)"
            elif fatal is not None:
                why = f"CUDA context lost: {fatal.get('note')}"
            else:
                why = f"process died (exit {rc}): {tail}"
            if culprit is None:  # died before any task: environment problem, charge every pending task
                for tid in pending_ids:
                    events.append({"ev": "error", "task": tid, "note": S.clean_note(why)})
                    events.append({"ev": "done", "task": tid})
                break
            events.append({"ev": "error", "task": culprit, "note": S.clean_note(why)})
            events.append({"ev": "done", "task": culprit})
            pending = [t for t in pending if t["id"] not in done and t["id"] != culprit]
            restarts += 1
            if rc == "timeout" or restarts > MAX_RESTARTS:
                for t in pending:
                    events.append({"ev": "error", "task": t["id"], "note": "budget" if rc == "timeout" else
                                   S.clean_note(f"not run: {env_kind} workers crashed {restarts} times")})
                    events.append({"ev": "done", "task": t["id"]})
                break
            log(f"{label}: worker ended ({why[:120]}); restarting for {len(pending)} remaining task(s)")
        return events

    def _spawn(self, cmd, env, limit, label):
        start = self.logfile.stat().st_size if self.logfile.exists() else 0
        with open(self.logfile, "a") as logf:
            logf.write(f"\n===== {label}: {' '.join(cmd[1:4])} ({time.strftime('%H:%M:%S')})\n")
            logf.flush()
            proc = subprocess.Popen(cmd, env=env, cwd=str(self.work), stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, limit))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # our own worker's process group only
                except ProcessLookupError:
                    pass
                proc.wait()
                rc = "timeout"
        if isinstance(rc, int) and rc < 0:
            rc = f"signal {-rc}"
        return rc, self._log_tail(start)

    def _log_tail(self, start=0):
        """The most telling line a worker wrote to the log since `start` (bytes)."""
        try:
            with open(self.logfile, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines()[-60:]
                 if ln.strip() and not ln.startswith(("=====", "[worker")) and not ln.startswith("  File ")]
        errs = [ln for ln in lines if re.search(r"Error|error|Exception|Aborted|Killed|fault", ln)]
        return S.clean_note((errs or lines or [""])[-1])[:160]

    @staticmethod
    def _read_events(path):
        events = []
        try:
            text = Path(path).read_text()
        except OSError:
            return events
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by a crash
        return events

    def absorb(self, events, tasks):
        """Values, task-level notes, rows and metadata from worker events."""
        by_id = {t["id"]: t for t in tasks}
        task_errors = {}
        for e in events:
            ev = e.get("ev")
            if ev == "meta":
                self.meta.update({k: v for k, v in e.items() if k != "ev"})
                if e.get("env") == "ours":
                    self.fp8_compute_api = e.get("fp8_compute_api")
                    self.fp8_compute_known = True
                    if e.get("patched") is False:
                        self.notes.append(S.clean_note(f"quanto_kernels did not patch quanto: {e.get('patch_reason')}"))
            elif ev == "value":
                v = e.get("value")
                self.values[key_str(e["key"])] = (None if v is None else round(v, 5), e.get("note"))
            elif ev == "info":
                self.infos[e["task"]] = e.get("classes")
            elif ev == "error":
                task_errors.setdefault(e["task"], e.get("note") or "failed")
            elif ev == "ceilings":
                self.ceilings = {"copy_tb_s": e.get("copy_tb_s"), "bf16_tflops": e.get("bf16_tflops")}
            elif ev == "build":
                self.build = {k: e.get(k) for k in ("s", "cached", "ok", "note") if e.get(k) is not None}
            elif ev == "flux":
                self.flux_rows.append(e["row"])
        for tid, note in task_errors.items():
            t = by_id.get(tid)
            if t is None:
                continue
            if t["kind"] == "layers":
                for m, metric in t["measure"]:
                    k = key_str([t["side"], t["format"], t["act"], t["K"], t["N"], m, metric])
                    if k not in self.values or self.values[k][0] is None and not self.values[k][1]:
                        self.values[k] = (None, note)
            elif t["kind"] == "flux":
                if not any(r["variant"] == t["variant"] and r["compiled"] == bool(t.get("compiled"))
                           for r in self.flux_rows):
                    self.flux_rows.append({"variant": t["variant"], "compiled": bool(t.get("compiled")), "step_s": None,
                                           "peak_gib": None, "rel_err_vs_bf16": None, "notes": S.clean_note(note)})
            elif t["kind"] == "build":
                self.build = {"ok": False, "note": S.clean_note(note)}
        # tasks that ended without a value for some of their measurements
        for t in tasks:
            if t["kind"] != "layers":
                continue
            for m, metric in t["measure"]:
                k = key_str([t["side"], t["format"], t["act"], t["K"], t["N"], m, metric])
                self.values.setdefault(k, (None, "no result"))

    # -------------------------------------------------------------------- parts
    def upstream_build(self):
        if self.build is not None:
            return self.build.get("ok", False)
        log("upstream: building quanto's CUDA extension (JIT)")
        task = {"kind": "build", "id": "upstream/build"}
        events = self.run_worker("upstream", [task], "upstream build")
        self.absorb(events, [task])
        if self.build is None:
            self.build = {"ok": False, "note": "build did not report"}
        log(f"upstream build: {self.build}")
        return self.build.get("ok", False)

    def run_linear(self, parts):
        self.parts_done.update(parts)
        plan = layer_plan(parts, self.args.formats)
        # ours worker: ceilings first, then per weight shape dense, ours and torchao (so that a budget cut
        # leaves complete shapes rather than one competitor everywhere)
        side_order = {"dense": 0, "ours": 1, "torchao": 2}
        grouped = layer_tasks(plan, "dense") + layer_tasks(plan, "ours") + layer_tasks(plan, "torchao")
        grouped.sort(key=lambda t: (t["K"], t["N"], t["act"], side_order[t["side"]], t["format"]))
        ours_tasks = [{"kind": "ceilings", "id": "ceilings"}] + grouped
        log(f"ours/dense/torchao: {len(ours_tasks)} tasks")
        ev = self.run_worker("ours", ours_tasks, "ours")
        self.absorb(ev, ours_tasks)
        self.write("after ours")
        up_tasks = layer_tasks(plan, "upstream")
        if up_tasks:
            if self.upstream_build():
                log(f"upstream: {len(up_tasks)} tasks")
                ev = self.run_worker("upstream", up_tasks, "upstream")
            else:
                why = S.clean_note(f"JIT build failed: {self.build.get('note')}")
                ev = [x for t in up_tasks for x in ({"ev": "error", "task": t["id"], "note": why},
                                                    {"ev": "done", "task": t["id"]})]
            self.absorb(ev, up_tasks)
            self.write("after upstream")
        fb_tasks = layer_tasks(plan, "fallback")
        if fb_tasks:
            log(f"fallback: {len(fb_tasks)} tasks")
            ev = self.run_worker("fallback", fb_tasks, "fallback")
            self.absorb(ev, fb_tasks)

    def run_flux(self):
        self.parts_done.add("flux")
        args = self.args
        ref = self.out / f"flux_ref_{self.tag}.pt"
        eager = [v for v in args.flux_variants]
        compiled = [v for v in args.flux_compiled]
        env_of = {"bf16": "plain", "torchao_fp8dq": "plain", "torchao_fp8wo": "plain", "upstream_fp8": "upstream",
                  "fallback_fp8": "fallback", "fallback_int8": "fallback"}
        tasks = [{"kind": "flux", "id": f"flux/{v}", "variant": v, "compiled": False} for v in eager]
        tasks += [{"kind": "flux", "id": f"flux/{v}/compiled", "variant": v, "compiled": True,
                   "compile_mode": args.compile_mode} for v in compiled]
        tasks.sort(key=lambda t: flux_priority(t["variant"], t["compiled"]))
        need_ceilings = not self.ceilings and not (self.existing or {}).get("ceilings", {}).get("copy_tb_s")
        build_proc = None
        if any(t["variant"] == "upstream_fp8" for t in tasks) and self.build is None:
            build_proc = self.start_background_build()
        for t in tasks:
            t["ref"] = str(ref)
            if args.tiny_flux:
                t.update(tiny=True, device="cpu", reps=2)
            env_kind = env_of.get(t["variant"], "ours")
            left = self.remaining()
            need = 90 if t["compiled"] else 25
            if left < need:
                self.absorb([{"ev": "error", "task": t["id"], "note": f"budget ({left:.0f} s left, ~{need} s needed)"},
                             {"ev": "done", "task": t["id"]}], [t])
                continue
            if t["variant"] == "upstream_fp8":
                if build_proc is not None:
                    self.finish_background_build(build_proc)
                    build_proc = None
                if not (self.build or {}).get("ok"):
                    self.absorb([{"ev": "error", "task": t["id"],
                                  "note": f"JIT build failed: {(self.build or {}).get('note')}"}], [t])
                    continue
            batch = [t]
            if need_ceilings and t["variant"] == "bf16" and not args.tiny_flux:
                batch = [{"kind": "ceilings", "id": "ceilings"}, t]
                need_ceilings = False
            log(f"flux {t['variant']}{' compiled' if t['compiled'] else ''} ({env_kind})")
            ev = self.run_worker(env_kind, batch, t["id"])
            self.absorb(ev, batch)
            row = next((r for r in reversed(self.flux_rows) if r["variant"] == t["variant"]
                        and r["compiled"] == t["compiled"]), None)
            if row:
                log(f"  step {S.fmt(row.get('step_s'))} s, peak {S.fmt(row.get('peak_gib'), 3)} GiB, rel err "
                    f"{S.fmt(row.get('rel_err_vs_bf16'), 3)} {row.get('notes') or ''}")
            self.write(f"after {t['id']}")
        if build_proc is not None:
            self.finish_background_build(build_proc)

    def start_background_build(self):
        """quanto's JIT build in the background (niced, one core left free) while other FLUX variants run."""
        n = len(list(self.work.glob("tasks_*.json")))
        tfile, rfile = self.work / f"tasks_{n}.json", self.work / f"results_{n}.jsonl"
        tfile.write_text(json.dumps([{"kind": "build", "id": "upstream/build"}]))
        env = dict(self.env, QUANTO_KERNELS_DISABLE="1", MAX_JOBS=str(max(1, (os.cpu_count() or 8) - 2)))
        cmd = [sys.executable, str(HERE / "worker.py"), "--env", "upstream", "--tasks", str(tfile), "--results",
               str(rfile), "--deadline", str(self.deadline)]
        logf = open(self.work / "build.log", "w")
        log("upstream: JIT build started in the background")
        proc = subprocess.Popen(cmd, env=env, cwd=str(self.work), stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: os.nice(10))
        return proc, rfile, logf

    def finish_background_build(self, handle):
        proc, rfile, logf = handle
        try:
            proc.wait(timeout=max(1.0, self.remaining() + GRACE_S))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        logf.close()
        with open(self.logfile, "a") as f:
            f.write("\n===== upstream build (background)\n" + (self.work / "build.log").read_text(errors="replace")[-4000:])
        task = {"kind": "build", "id": "upstream/build"}
        self.absorb(self._read_events(rfile), [task])
        if self.build is None:
            self.build = {"ok": False, "note": f"build process ended with {proc.returncode}"}
        else:
            self.build["overlapped"] = True
        log(f"upstream build: {self.build}")

    # -------------------------------------------------------------------- summary
    def value(self, side, fmt, act, k, n, m, metric):
        return self.values.get(key_str([side, fmt, act, k, n, m, metric]))

    def assemble(self):
        s = S.empty_summary()
        gpu_smi, _ = driver_version()
        s["gpu"] = self.meta.get("gpu") or gpu_smi
        s["date"] = datetime.date.today().isoformat()
        s["commit"] = commit_of_measured_code()
        s["versions"] = versions()
        s["ceilings"] = dict(self.ceilings) if self.ceilings else {"copy_tb_s": None, "bf16_tflops": None}
        if self.build:
            s["upstream_build"] = self.build
        s["parts"] = {p: {"date": s["date"], "commit": s["commit"]} for p in sorted(self.parts_done)}
        s["notes"] = list(self.notes)
        formats = list(self.args.formats)
        if "fp8_compute" in formats and self.fp8_compute_known and not self.fp8_compute_api:
            formats.remove("fp8_compute")
            s["notes"].append("fp8_compute rows skipped: quanto_kernels exposes no fp8 compute mode "
                              f"(looked for {', '.join(FP8_COMPUTE_APIS)})")
        for fmt in formats if "layers" in self.parts_done else ():
            for act in S.ACTS[fmt]:
                for m, k, n in S.ROWS:
                    row = self.layer_row(fmt, act, m, k, n)
                    if row is not None:
                        s["layers"].append(row)
        sweep = []
        k, n = S.SWEEP_KN
        for m in S.SWEEP_MS if "sweep" in self.parts_done else ():
            row = S.empty_layer_row(S.SWEEP_FORMAT, S.SWEEP_ACT, m, k, n, sweep=True)
            notes = {}
            any_val = False
            for who in S.SWEEP_WHO:
                fmt = "dense" if who == "dense" else S.SWEEP_FORMAT
                got = self.value(who, fmt, S.SWEEP_ACT, k, n, m, "kernel")
                if got is None:
                    continue
                any_val = True
                row["kernel_ms"][who] = got[0]
                if got[1]:
                    notes[who] = got[1]
            if any_val:
                for who in S.SWEEP_WHO:
                    if row["kernel_ms"][who] is None and who not in notes:
                        notes[who] = "not measured"
                row["notes"] = S.format_notes(notes)
                sweep.append(row)
        if sweep:
            s["sweep"] = sweep
        s["flux"] = [dict(r) for r in self.flux_rows]
        return s

    def layer_row(self, fmt, act, m, k, n):
        row = S.empty_layer_row(fmt, act, m, k, n)
        notes = {}
        measured_any = False
        for metric, whos in (("kernel", S.KERNEL_WHO), ("layer", S.LAYER_WHO)):
            for who in whos:
                side_fmt = {"dense": "dense", "torchao": "fp8"}.get(who, fmt)
                na = self.not_applicable(who, fmt, metric)
                if na:
                    notes.setdefault(who, na)
                    continue
                got = self.value(who, side_fmt, act, k, n, m, metric)
                if got is None:
                    continue
                if who == "ours":
                    measured_any = True
                row[f"{metric}_ms"][who] = got[0]
                if got[1]:
                    if got[0] is None:
                        notes[f"{metric} {who}"] = got[1]
                    else:
                        notes[f"{metric} {who}"] = got[1]
        if not measured_any and not any(v is not None for d in (row["kernel_ms"], row["layer_ms"]) for v in d.values()):
            return None  # nothing asked for this row in this run
        for metric, whos in (("kernel", S.KERNEL_WHO), ("layer", S.LAYER_WHO)):
            for who in whos:
                if row[f"{metric}_ms"][who] is None and who not in notes and f"{metric} {who}" not in notes:
                    notes[f"{metric} {who}"] = "not measured in this run"
        # collapse identical kernel/layer notes into one
        for who in set(S.KERNEL_WHO) | set(S.LAYER_WHO):
            a, b = notes.get(f"kernel {who}"), notes.get(f"layer {who}")
            if a is not None and a == b:
                notes.pop(f"kernel {who}")
                notes.pop(f"layer {who}")
                notes[who] = a
        row["notes"] = S.format_notes(notes)
        return row

    @staticmethod
    def not_applicable(who, fmt, metric):
        if who == "upstream" and fmt in ("int8", "int4_bf16"):
            return ("n/a: quanto has no extension kernel here (int8: dequantize + matmul in PyTorch)"
                    if fmt == "int8" else "n/a: quanto uses torch's tinygemm int4 kernel, no extension kernel")
        if who == "upstream" and fmt == "fp8_compute":
            return "n/a"
        if who == "torchao" and fmt != "fp8":
            return "n/a (float8 weight-only measured with the fp8 rows only)"
        if who == "fallback" and fmt == "fp8_compute":
            return "n/a"
        return None

    def write(self, when=""):
        new = self.assemble()
        merged = S.merge_summaries(self.existing, new)
        paths = S.write_outputs(merged, self.out, self.tag)
        problems = S.validate(merged)
        if problems:
            log(f"summary has {len(problems)} schema problem(s), first: {problems[0]}")
        self.last = merged
        log(f"summary written ({when}): {paths['json'].name}")
        return merged


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", required=True, help="output folder (flat; at most 5 files are written there)")
    p.add_argument("--part", choices=("layers", "sweep", "flux", "all", "report"), default="all")
    p.add_argument("--gpu-tag", default="gpu", help="tag in the file names, e.g. h200")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds after which nothing new starts (default: layers 450, sweep 200, flux 510, all: sum)")
    p.add_argument("--merge", action="append", default=[], help="summary JSON of earlier parts to merge (repeatable)")
    p.add_argument("--formats", default=",".join(S.FORMATS), help="layer formats (comma-separated)")
    p.add_argument("--flux-variants", default=",".join(S.FLUX_VARIANTS), help="eager FLUX variants")
    p.add_argument("--flux-compiled", default=",".join(S.FLUX_COMPILED), help="compiled FLUX variants ('' for none)")
    p.add_argument("--compile-mode", choices=("regional", "full"), default="regional",
                   help="regional: torch.compile of each repeated transformer block (diffusers' "
                        "compile_repeated_blocks, fast to compile); full: torch.compile(model)")
    p.add_argument("--tiny-flux", action="store_true", help=argparse.SUPPRESS)  # CPU test of the FLUX code path
    args = p.parse_args(argv)
    args.formats = [f for f in args.formats.split(",") if f]
    bad = [f for f in args.formats if f not in S.FORMATS]
    if bad:
        p.error(f"unknown format(s) {bad}; known: {S.FORMATS}")
    args.flux_variants = [v for v in args.flux_variants.split(",") if v]
    args.flux_compiled = [v for v in args.flux_compiled.split(",") if v]
    parts = ["layers", "sweep", "flux"] if args.part == "all" else [args.part]
    if args.budget_s is None:
        args.budget_s = sum(DEFAULT_BUDGET[x] for x in parts)
    if not re.match(r"^[A-Za-z0-9._-]+$", args.gpu_tag):
        p.error("--gpu-tag: letters, digits, '.', '_' and '-' only")

    runner = Runner(args)
    existing = S.load(runner.out / f"summary_{args.gpu_tag}.json")
    for path in args.merge:
        other = S.load(path)
        if other is None:
            p.error(f"--merge {path}: not a readable summary JSON")
        existing = S.merge_summaries(existing, other)
    runner.existing = existing
    try:
        if args.part == "report":
            if existing is None:
                p.error(f"nothing to report: no summary_{args.gpu_tag}.json in {runner.out} and no --merge")
            merged = S.merge_summaries(None, existing)
            S.write_outputs(merged, runner.out, args.gpu_tag)
            runner.last = merged
        else:
            log(f"part {args.part}, budget {args.budget_s:.0f} s, out {runner.out}")
            linear = [x for x in parts if x in ("layers", "sweep")]
            if linear:
                try:
                    runner.run_linear(linear)
                except Exception as exc:  # noqa: BLE001 - always write what was measured
                    runner.notes.append(S.clean_note(f"layers/sweep stopped: {type(exc).__name__}: {exc}"))
                    log(f"layers/sweep stopped: {exc!r}")
                runner.write("layers/sweep")
            if "flux" in parts:
                try:
                    runner.run_flux()
                except Exception as exc:  # noqa: BLE001
                    runner.notes.append(S.clean_note(f"flux stopped: {type(exc).__name__}: {exc}"))
                    log(f"flux stopped: {exc!r}")
                runner.write("flux")
    finally:
        shutil.rmtree(runner.work, ignore_errors=True)
        try:  # keep the log bounded
            if runner.logfile.exists() and runner.logfile.stat().st_size > 4 * 2**20:
                data = runner.logfile.read_bytes()[-4 * 2**20:]
                runner.logfile.write_bytes(data)
        except OSError:
            pass
    s = getattr(runner, "last", None)
    if s is not None:
        print("\n" + S.short_table(s))
        problems = S.validate(s)
        print(f"\nschema: {'ok' if not problems else '; '.join(problems[:5])}")
        print(f"files: {', '.join(sorted(x.name for x in runner.out.iterdir() if x.is_file()))} in {runner.out}")
        print(f"elapsed {time.time() - runner.t0:.0f} s")


if __name__ == "__main__":
    main()
