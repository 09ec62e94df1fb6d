"""Would the native sources build with nvcc + MSVC? Checked on Linux (see portability_check.py)."""

import re
from pathlib import Path

import pytest

import portability_check as pc

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "portability" / "fixtures"

needs_nvcc = pytest.mark.skipif(pc.nvcc() is None, reason="nvcc is not installed")


@needs_nvcc
def test_planted_gnu_asm_is_reported():
    hits = pc.check_file(FIXTURES / "gnu_asm.cu")
    assert [(line, tok) for _, line, tok in hits] == [
        (6, "__asm__"), (6, "__volatile__"), (10, "__asm__"), (10, "__volatile__"), (14, "__asm__"), (14, "__volatile__")]


@needs_nvcc
def test_portable_twin_passes():
    assert pc.check_file(FIXTURES / "portable_asm.cu") == []


@needs_nvcc
@pytest.mark.parametrize("path", pc.sources([ROOT / "csrc"]), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_native_source_passes(path):
    assert pc.check_file(path) == []


def test_csrc_has_every_kernel_family():
    """The header, the compat layer and a CUDA source for every family (wherever csrc/ files them)."""
    files = [p for p in (ROOT / "csrc").rglob("*") if p.is_file()]
    assert {"qk_compat.h", "quanto_kernels.h"} <= {p.name for p in files}
    cuda = [str(p.relative_to(ROOT / "csrc")) for p in files if p.suffix == ".cu"]
    for family in ("unpack", "marlin_repack", "fp8", "awq_int4", "marlin_int4"):
        assert any(family in path for path in cuda), f"no CUDA source for {family} under csrc/: {sorted(cuda)}"


def test_token_scan_of_csrc_is_clean():
    # A text scan complements the preprocessor check (it also sees code switched off by macros).
    bad = re.compile(r"\b(__asm__|__volatile__|__attribute__|__builtin_\w+|typeof|ssize_t|__int128|__thread)\b")
    for path in (ROOT / "csrc").rglob("*"):
        if path.suffix in (".h", ".cuh", ".cu", ".cpp"):
            text = re.sub(r"//[^\n]*|/\*.*?\*/|\"(\\.|[^\"\\])*\"", "", path.read_text(), flags=re.S)
            assert not bad.search(text), f"{path}: {bad.search(text).group(0)}"


def test_inline_ptx_only_through_compat_macros():
    for path in (ROOT / "csrc").rglob("*"):
        if path.suffix in (".h", ".cuh", ".cu", ".cpp") and path.parent.name != "compat":
            text = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)
            assert not re.search(r"\basm\s*(volatile)?\s*\(", text), f"{path}: use QK_ASM_VOLATILE"


def test_no_torch_or_python_headers_in_csrc():
    pattern = re.compile(r'#\s*include\s*[<"](torch/|ATen/|c10/|Python\.h|pybind11/)')
    for path in (ROOT / "csrc").rglob("*"):
        if path.is_file():
            assert not pattern.search(path.read_text()), path


ALLOWED_ABI_TYPES = {"void", "const void*", "void*", "int32_t", "int64_t", "int32_t*", "int64_t*", "const char*"}


def test_c_abi_uses_only_fixed_width_types():
    header = (ROOT / "csrc" / "api" / "quanto_kernels.h").read_text()
    header = re.sub(r"/\*.*?\*/|//[^\n]*", "", header, flags=re.S)
    assert not re.search(r"\blong\b|\bsize_t\b|\bunsigned\b|\bint\b(?!\d)", header)
    decls = re.findall(r"QK_API\s+([\w\s\*]+?)\s*(qk_\w+)\(([^)]*)\);", header)
    assert len(decls) >= 15
    for ret, name, params in decls:
        assert " ".join(ret.split()) in ALLOWED_ABI_TYPES, (name, ret)
        for param in params.split(","):
            param = " ".join(param.split())
            if param == "void":
                continue
            ptype = re.sub(r"\s*\w+$", "", param).replace(" *", "*")
            assert ptype in ALLOWED_ABI_TYPES, (name, param)
