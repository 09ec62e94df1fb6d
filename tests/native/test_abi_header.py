"""The Python ABI table (quanto_kernels._native.abi) against the C header, the source of truth.

Fails on any drift: a function declared on one side only, another return type, another argument
count, order, name or C type, another value of a status/dtype/scale-perm code or of the ABI version.
The comparison function is also run on a deliberately corrupted copy of the table, so a drift that it
would not notice (e.g. `n` and `k` swapped: both int64_t) makes this test fail too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from quanto_kernels._native import abi, cdecl

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "api" / "quanto_kernels.h"
needs_header = pytest.mark.skipif(not HEADER.is_file(), reason=f"no source checkout here ({HEADER} is missing)")


def drift(header_functions, table_functions):
    """Every difference between two lists of cdecl.Function, as sentences (empty: identical)."""
    problems = []
    header = {f.name: f for f in header_functions}
    table = {f.name: f for f in table_functions}
    for name in sorted(header.keys() - table.keys()):
        problems.append(f"{name}: declared in the header, missing from abi.DECLARATIONS")
    for name in sorted(table.keys() - header.keys()):
        problems.append(f"{name}: in abi.DECLARATIONS, not declared in the header")
    for name in sorted(header.keys() & table.keys()):
        h, t = header[name], table[name]
        if h.restype != t.restype:
            problems.append(f"{name}: returns {h.restype} in the header, {t.restype} in the table")
        hp = [(p.ctype, p.name) for p in h.params]
        tp = [(p.ctype, p.name) for p in t.params]
        if hp != tp:
            problems.append(f"{name}: header ({', '.join(f'{c} {n}' for c, n in hp)}) != "
                            f"table ({', '.join(f'{c} {n}' for c, n in tp)})")
    return problems


@pytest.fixture(scope="module")
def header_text():
    return HEADER.read_text()


@needs_header
def test_every_header_function_is_in_the_table_with_the_same_signature(header_text):
    problems = drift(cdecl.parse_functions(header_text), list(abi.FUNCTIONS.values()))
    assert not problems, "C ABI drift:\n  " + "\n  ".join(problems)


@needs_header
def test_every_header_constant_has_the_same_value_in_python(header_text):
    constants = cdecl.parse_constants(header_text)
    assert constants, "no constants read from the header"
    problems = []
    for name, value in sorted(constants.items()):
        if not name.startswith("QK_"):
            continue
        py_name = name[len("QK_"):]
        if not hasattr(abi, py_name):
            problems.append(f"{name} = {value}: abi.{py_name} is missing")
        elif getattr(abi, py_name) != value:
            problems.append(f"{name} = {value}: abi.{py_name} = {getattr(abi, py_name)}")
    assert not problems, "C ABI constant drift:\n  " + "\n  ".join(problems)
    for group in ("STATUS_", "DTYPE_", "SCALE_PERM_"):
        assert any(n.startswith("QK_" + group) for n in constants), f"no QK_{group}* read from the header"


def _swap_params(fn: cdecl.Function, a: str, b: str) -> cdecl.Function:
    names = [p.name for p in fn.params]
    i, j = names.index(a), names.index(b)
    params = list(fn.params)
    params[i], params[j] = params[j], params[i]
    return dataclasses.replace(fn, params=tuple(params))


@pytest.mark.parametrize("function, a, b", [("qk_fp8_marlin_gemv", "n", "k"), ("qk_awq_int4_dequantize", "n", "k"),
                                            ("qk_marlin_int4_gemv", "group_size", "m"),
                                            ("qk_marlin_repack", "size_k", "size_n")])
def test_a_swap_of_same_typed_arguments_is_drift(function, a, b):
    table = list(abi.FUNCTIONS.values())
    corrupted = [_swap_params(f, a, b) if f.name == function else f for f in table]
    swapped = next(f for f in corrupted if f.name == function)
    assert [p.ctype for p in swapped.params] == [p.ctype for p in abi.FUNCTIONS[function].params], \
        "the swap keeps every C type: only the names tell it apart"
    problems = drift(table, corrupted)
    assert len(problems) == 1 and problems[0].startswith(function + ":"), problems


def test_other_drifts_are_reported():
    table = list(abi.FUNCTIONS.values())
    gemv = abi.FUNCTIONS["qk_fp8_marlin_gemv"]
    retyped = dataclasses.replace(gemv, params=(cdecl.Param("int32_t", "a"),) + gemv.params[1:])
    assert drift(table, [retyped if f is gemv else f for f in table])
    assert drift(table, [dataclasses.replace(gemv, restype="int64_t") if f is gemv else f for f in table])
    assert drift(table, [f for f in table if f is not gemv]) == [
        "qk_fp8_marlin_gemv: declared in the header, missing from abi.DECLARATIONS"]
    extra = cdecl.parse_functions("int32_t qk_new(int64_t n, void* stream);")
    assert drift(table, table + extra) == ["qk_new: in abi.DECLARATIONS, not declared in the header"]


def test_reader_handles_the_header_syntax():
    text = """
    /* a comment with qk_fake(int x); inside */
    #define QK_ABI_VERSION 7
    enum { QK_A = 0, QK_B, QK_C = 5 };
    QK_API int32_t qk_f(const void* in, void* out,
                        int64_t n /* rows */, int64_t* bytes);
    QK_API const char* qk_g(void);
    """
    fns = cdecl.parse_functions(text)
    assert [f.name for f in fns] == ["qk_f", "qk_g"]
    assert [(p.ctype, p.name) for p in fns[0].params] == [("const void*", "in"), ("void*", "out"), ("int64_t", "n"),
                                                          ("int64_t*", "bytes")]
    assert fns[1].restype == "const char*" and fns[1].params == ()
    assert cdecl.parse_constants(text) == {"QK_ABI_VERSION": 7, "QK_A": 0, "QK_B": 1, "QK_C": 5}
    with pytest.raises(ValueError, match="cannot read parameter"):
        cdecl.parse_functions("int32_t qk_bad(int64_t);")


def test_every_declared_c_type_has_a_ctypes_mapping():
    for fn in abi.FUNCTIONS.values():
        restype, argtypes = abi.ctypes_signature(fn)  # KeyError names the unmapped type
        assert len(argtypes) == len(fn.params), fn.name
        assert fn.restype == "void" or restype is not None, fn.name


def test_a_function_the_library_lacks_fails_when_called_not_at_load():
    class Lib:  # exports only what loading needs
        qk_last_error = staticmethod(lambda: b"")

    bound = abi.BoundAbi(Lib(), "libfake.so")
    from quanto_kernels._native import NativeLibraryError

    fn = bound.fp8_marlin_gemv  # binding a missing symbol is fine ...
    with pytest.raises(NativeLibraryError, match="libfake.so does not export qk_fp8_marlin_gemv"):
        fn(a=0, w=0, scales=0, out=0, workspace=None, workspace_bytes=0, m=1, n=64, k=16, dtype=1, device=0,
           stream=None)  # ... calling it is not
    assert not bound.exports("fp8_marlin_gemv")
    with pytest.raises(AttributeError, match="declares no function qk_nope"):
        bound.nope


def test_wrappers_take_keyword_arguments_only():
    from quanto_kernels._native import loader

    lib = loader.get_library()
    with pytest.raises(TypeError):
        lib.abi.unpack(16, 32, 4, 3, 0, None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'in'"):
        lib.abi.unpack(**{"in": 16}, out=32, numel=4, bits=3, device=0, stream=None)
