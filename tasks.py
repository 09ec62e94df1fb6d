"""The project's task runner: one way in for building, testing, benchmarking and release checks.

    python tasks.py --help
    python tasks.py <task> --help

Tasks (each runs in the Python that runs this file; nothing here installs torch for you):

  build            pip install ".[test]" (QUANTO_KERNELS_* build variables from the options)
  test             the README's test command: pip install ".[test]" && python -m pytest tests -ra
  gpu-test         on a CUDA GPU: install, `python -m quanto_kernels`, the whole suite with a JUnit report
  hardening        on a CUDA GPU: fuzz/concurrency/graphs/memory/huge-shape tests + compute-sanitizer
  sanitize         on a CUDA GPU: compute-sanitizer (memcheck, racecheck, initcheck, synccheck)
  bench            python benchmarks/run.py --out DIR [arguments after --]
  verify-wheel     sdist -> wheel -> auditwheel -> scripts/check_wheel.py -> tests from a fresh venv
  wheel-check      on a CUDA GPU: install a built wheel (no compiling) and test every CUDA build in it
  check-workflows  actionlint, zizmor, pinned actions, cibuildwheel identifiers
  portability      the MSVC-view preprocessor check of every native source
  ci               what CI runs (.ci/run)

Extra arguments for pytest (test, gpu-test) or benchmarks/run.py (bench) go after `--`.
Output folders are arguments (--out DIR); without one, a new folder is made with tempfile.mkdtemp and
printed. --wheels DIR makes every pip install of a task resolve from that folder only (for machines
without a package index); see docs/building.md, "Offline machines".

Why a stdlib script and not nox/tox/make: the tasks must run in the environment the user already has,
because torch is installed per machine (the CUDA build matching the driver, or the CPU build) and a task
runner that makes its own virtualenvs would pull PyPI's default CUDA torch into each; make is not there
on Windows. This file needs nothing beyond Python >= 3.9.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PY = sys.executable
# The README's test command. .ci/run runs it verbatim; `test` runs the same two steps.
README_TEST_COMMAND = 'pip install ".[test]" && python -m pytest tests -ra'


def out_dir(path: str | None, task: str) -> Path:
    if path:
        p = Path(path).resolve()
        p.mkdir(parents=True, exist_ok=True)
    else:
        p = Path(tempfile.mkdtemp(prefix=f"qk-{task}-"))
    print(f"[tasks] {task}: output in {p}", flush=True)
    return p


def quiet_caches(env: dict, scratch: Path) -> dict:
    """Points every cache a test run could fill (torch.compile, Triton, CUDA JIT, Hugging Face, pip) at
    `scratch`, so a run leaves nothing behind in the user's caches, and stops bytecode files."""
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(env)
    env.update({
        "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
        "TRITON_CACHE_DIR": str(scratch / "triton"),
        "CUDA_CACHE_PATH": str(scratch / "cuda"),
        "HF_HOME": str(scratch / "hf"),
        "XDG_CACHE_HOME": str(scratch / "xdg"),
        "PIP_NO_CACHE_DIR": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def build_env(args) -> dict:
    env = dict(os.environ)
    if getattr(args, "archs", None):
        env["QUANTO_KERNELS_CUDA_ARCHS"] = args.archs
    if getattr(args, "jobs", None):
        env["QUANTO_KERNELS_BUILD_JOBS"] = str(args.jobs)
    if getattr(args, "cuda_homes", None):
        env["QUANTO_KERNELS_CUDA_HOMES"] = args.cuda_homes
    return env


def run(cmd, env=None, cwd=ROOT) -> None:
    print("[tasks] $", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    rc = subprocess.call([str(c) for c in cmd], env=env, cwd=str(cwd))
    if rc != 0:
        sys.exit(rc)


def pip_install(specs, env, wheels: str | None, editable=False, extra=()) -> None:
    """pip install `specs`; with a wheels folder, from that folder only and without build isolation
    (the build tools, setuptools>=77, cmake>=3.24 and ninja, must then be installed or in the folder)."""
    cmd = [PY, "-m", "pip", "install", *extra]
    if wheels:
        cmd += ["--no-index", "--find-links", str(Path(wheels).resolve()), "--no-build-isolation"]
    cmd += (["-e"] if editable else []) + list(specs)
    run(cmd, env=env)


def install_project(args, env) -> None:
    pip_install([".[test]"], env, getattr(args, "wheels", None))


def require_gpu() -> None:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    if subprocess.call([PY, "-c", code]) != 0:
        sys.exit("[tasks] this task needs a CUDA GPU (torch.cuda.is_available() is False)")


# ------------------------------------------------------------------------------------------ tasks
def task_build(args) -> None:
    env = build_env(args)
    pip_install([".[test]" if not args.no_test_extra else "."], env, args.wheels, editable=args.editable)


def task_test(args) -> None:
    """The README's test command (`-ra` lists every failure and skip with its reason)."""
    env = build_env(args)
    install_project(args, env)
    scratch = Path(tempfile.mkdtemp(prefix="qk-test-caches-"))
    try:
        run([PY, "-m", "pytest", "tests", "-ra", *args.pytest_args], env=quiet_caches(env, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def gpu_task(args, name: str):
    """The shared start of the GPU tasks: output folder, build environment, install (unless
    --no-install), a GPU check, and caches quietened into the output folder. Returns (out, env)."""
    out = out_dir(args.out, name)
    env = build_env(args)
    if not args.no_install:
        install_project(args, env)
    require_gpu()
    env = quiet_caches(env, out / "caches")
    env["PYTHON"] = PY
    return out, env


def finish_gpu_task(out: Path, rc: int) -> None:
    shutil.rmtree(out / "caches", ignore_errors=True)
    sys.exit(rc)


def task_gpu_test(args) -> None:
    out, env = gpu_task(args, "gpu-test")
    with open(out / "diagnostics.txt", "w") as f:
        rc = subprocess.call([PY, "-m", "quanto_kernels"], env=env, cwd=str(out), stdout=f, stderr=subprocess.STDOUT)
    print((out / "diagnostics.txt").read_text())
    # From the output folder, so the tests import the installed package, not the source tree.
    cmd = [PY, "-m", "pytest", str(ROOT / "tests"), "-ra", "-p", "no:cacheprovider",
           f"--junitxml={out / 'junit.xml'}", *args.pytest_args]
    print("[tasks] $", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env, cwd=str(out)) or rc
    finish_gpu_task(out, rc)


def task_sanitize(args) -> None:
    out, env = gpu_task(args, "sanitize")
    if args.tools:
        env["SANITIZE_TOOLS"] = " ".join(args.tools.replace(",", " ").split())
    if args.timeout:
        env["SANITIZE_TIMEOUT"] = str(args.timeout)
    rc = subprocess.call(["bash", str(ROOT / "scripts" / "sanitize.sh"), str(out)], env=env, cwd=str(out))
    finish_gpu_task(out, rc)


def task_hardening(args) -> None:
    out, env = gpu_task(args, "hardening")
    rc = subprocess.call(["bash", str(ROOT / "scripts" / "hardening_run.sh"), str(out),
                          "multi" if args.multi else "single"], env=env, cwd=str(out))
    finish_gpu_task(out, rc)


def task_bench(args) -> None:
    out = out_dir(args.out, "bench")
    script = ROOT / "benchmarks" / "run.py"
    if not script.is_file():
        sys.exit(f"[tasks] {script.relative_to(ROOT)} is not in this checkout")
    env = build_env(args)
    if not args.no_install:
        install_project(args, env)
    run([PY, str(script), "--out", str(out), *args.bench_args], env=env)


def task_verify_wheel(args) -> None:
    out = out_dir(args.out, "verify-wheel")
    env = build_env(args)
    env["PYTHON"] = PY
    cmd = ["bash", str(ROOT / "scripts" / "verify_wheel.sh"), str(out)]
    if args.wheels:
        cmd += ["--wheels", str(Path(args.wheels).resolve())]
    run(cmd, env=env)


def task_wheel_check(args) -> None:
    out = out_dir(args.out, "wheel-check")
    env = dict(os.environ, PYTHON=PY)
    cmd = ["bash", str(ROOT / "scripts" / "device_wheel_check.sh"), str(Path(args.wheel).resolve()), str(out)]
    if args.wheels:
        cmd += ["--wheels", str(Path(args.wheels).resolve())]
    run(cmd, env=env)


def task_check_workflows(args) -> None:
    run(["bash", str(ROOT / "scripts" / "check_workflows.sh")], env=dict(os.environ, PYTHON=PY))


def task_portability(args) -> None:
    run([PY, str(ROOT / "tests" / "portability_check.py")], env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def task_ci(args) -> None:
    run(["bash", str(ROOT / ".ci" / "run")])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python tasks.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    sub = parser.add_subparsers(dest="task", required=True, metavar="task")

    def add(name, fn, help_text, build=False, out=False, wheels=False, install=False):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        if build:
            p.add_argument("--archs", help='QUANTO_KERNELS_CUDA_ARCHS, e.g. "80" or "80;90"')
            p.add_argument("--jobs", type=int, help="QUANTO_KERNELS_BUILD_JOBS")
            p.add_argument("--cuda-homes", help="QUANTO_KERNELS_CUDA_HOMES (one build per toolkit)")
        if out:
            p.add_argument("--out", help="output folder (default: a new temporary folder, printed)")
        if wheels:
            p.add_argument("--wheels", help="install dependencies from this folder of wheels only (offline)")
        if install:
            p.add_argument("--no-install", action="store_true", help="use the quanto_kernels already installed")
        return p

    p = add("build", task_build, "build and install the package (with the test extra)", build=True, wheels=True)
    p.add_argument("--editable", action="store_true", help="pip install -e")
    p.add_argument("--no-test-extra", action="store_true", help='install "." instead of ".[test]"')
    p = add("test", task_test, f"the README's test command: {README_TEST_COMMAND}", build=True, wheels=True)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="more pytest arguments")
    p = add("gpu-test", task_gpu_test, "diagnostics + the whole suite on a CUDA GPU, JUnit report in --out",
            build=True, out=True, wheels=True, install=True)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="more pytest arguments")
    p = add("sanitize", task_sanitize, "compute-sanitizer over every kernel (CUDA GPU)", build=True, out=True,
            wheels=True, install=True)
    p.add_argument("--tools", help="comma-separated subset of memcheck,racecheck,initcheck,synccheck")
    p.add_argument("--timeout", type=int, help="seconds per tool (default 270)")
    p = add("hardening", task_hardening, "hardening tests + compute-sanitizer (CUDA GPU)", build=True, out=True,
            wheels=True, install=True)
    p.add_argument("--multi", action="store_true", help="the multi-GPU suite (2+ GPUs)")
    p = add("bench", task_bench, "benchmarks/run.py --out DIR (CUDA GPU)", build=True, out=True, wheels=True,
            install=True)
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for benchmarks/run.py (after --)")
    add("verify-wheel", task_verify_wheel, "build the Linux wheel here and prove it from a fresh venv",
        build=True, out=True, wheels=True)
    p = add("wheel-check", task_wheel_check, "install a built wheel (no compiling) and test each CUDA build in it",
            out=True, wheels=True)
    p.add_argument("wheel", help="the quanto_kernels wheel to test")
    add("check-workflows", task_check_workflows, "lint the GitHub workflows and the cibuildwheel configuration")
    add("portability", task_portability, "MSVC-view preprocessor check of the native sources (needs nvcc)")
    add("ci", task_ci, "run .ci/run")

    args = parser.parse_args(argv)
    for name in ("pytest_args", "bench_args"):
        rest = getattr(args, name, None)
        if rest and rest[0] == "--":
            setattr(args, name, rest[1:])
    args.fn(args)


if __name__ == "__main__":
    main()
