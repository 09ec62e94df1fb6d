"""Cheap structural checks of a shared library file before the dynamic loader maps it.

A truncated ELF makes dlopen map pages past the end of the file and the process dies with SIGBUS
on first touch, so we verify that every header and segment the file declares lies inside it, and
that it was built for this machine's architecture, and raise a readable error otherwise.
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path
from typing import Optional

ELF_MACHINES = {3: "x86", 62: "x86_64", 40: "arm", 183: "aarch64", 243: "riscv"}
PE_MACHINES = {0x14C: "x86", 0x8664: "x86_64", 0xAA64: "aarch64"}
HOST_ALIASES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64",
                "i386": "x86", "i686": "x86", "x86": "x86"}


def host_machine() -> str:
    m = platform.machine().lower()
    return HOST_ALIASES.get(m, m)


def problem(path: Path, host: Optional[str] = None) -> Optional[str]:
    """None if the file looks loadable, else a sentence saying what is wrong."""
    host = host or host_machine()
    data = path.read_bytes()
    if len(data) < 64:
        return f"{path.name} is only {len(data)} bytes long (truncated or empty)"
    if data[:4] == b"\x7fELF":
        return _elf_problem(path.name, data, host)
    if data[:2] == b"MZ":
        return _pe_problem(path.name, data, host)
    return f"{path.name} is neither an ELF nor a PE library"


def _elf_problem(name: str, data: bytes, host: str) -> Optional[str]:
    if data[4] != 2 or data[5] != 1:
        return f"{name} is not a 64-bit little-endian ELF file"
    machine = struct.unpack_from("<H", data, 18)[0]
    arch = ELF_MACHINES.get(machine, f"machine {machine}")
    if arch != host:
        return f"{name} is built for {arch}, but this machine is {host}"
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    size = len(data)
    if phoff + phnum * phentsize > size or shoff + shnum * shentsize > size:
        return f"{name} is truncated ({size} bytes; its headers extend past the end)"
    for i in range(phnum):
        offset, filesz = struct.unpack_from("<8xQ16xQ", data, phoff + i * phentsize)
        if offset + filesz > size:
            return f"{name} is truncated ({size} bytes; a segment ends at byte {offset + filesz})"
    return None


def _pe_problem(name: str, data: bytes, host: str) -> Optional[str]:
    (lfanew,) = struct.unpack_from("<I", data, 0x3C)
    if lfanew + 24 > len(data) or data[lfanew:lfanew + 4] != b"PE\0\0":
        return f"{name} is truncated or not a PE library"
    machine, nsections = struct.unpack_from("<HH", data, lfanew + 4)
    arch = PE_MACHINES.get(machine, f"machine 0x{machine:x}")
    if arch != host:
        return f"{name} is built for {arch}, but this machine is {host}"
    (opt_size,) = struct.unpack_from("<H", data, lfanew + 20)
    table = lfanew + 24 + opt_size
    if table + 40 * nsections > len(data):
        return f"{name} is truncated ({len(data)} bytes; its section table extends past the end)"
    for i in range(nsections):
        raw_size, raw_ptr = struct.unpack_from("<II", data, table + 40 * i + 16)
        if raw_ptr + raw_size > len(data):
            return f"{name} is truncated ({len(data)} bytes; a section ends at byte {raw_ptr + raw_size})"
    return None
