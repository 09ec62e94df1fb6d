"""CPU model of the Hopper Marlin-layout GEMM's indexing (csrc/common/sm90_marlin_gemm.cuh and its operand
policies: FP8 weight-only, e4m3 compute, int8 with its row-major layout), checked against the layout formula of docs/layouts.md. No GPU: it replays with numpy what each
lane of a block loads from the staged weight slice, how the policy forms its wgmma A-fragment registers,
the PTX fragment semantics of the warpgroup products, and the epilogue's row -> channel map, and compares
the block's product with the plain product of the codes. Keeps the kernel's index expressions (restated
here from the source) honest when either side changes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import support as sp

D_SLOT = (0, 8, 1, 9)  # byte b of a Marlin word holds k = 2q + D_SLOT[b] of its 16-deep slice


def _block_bytes(codes: torch.Tensor) -> np.ndarray:
    """The layout of (128, K) codes as bytes per 16-deep slice: (K/16, 2048), what one block stages."""
    packed = sp.fp8_marlin_layout(codes)  # (K/16, 4 * 128) int32
    return packed.contiguous().view(torch.uint8).numpy().reshape(packed.shape[0], 2048)


def _lane_words(slice_bytes: np.ndarray, wg: int, warp: int, lane: int) -> np.ndarray:
    """The 8-byte load of one lane (kernel: a_offset = wg * 1024 + lane * 32 + warp * 8) as 2 words x 4 bytes."""
    off = wg * 1024 + lane * 32 + warp * 8
    return slice_bytes[off:off + 8].reshape(2, 4)


def _channel(wg: int, warp: int, row: int) -> int:
    """Row `row` (0..15) of a warp's 16 in its warpgroup's product: channel 64 wg + 16 warp + row."""
    return 64 * wg + 16 * warp + row


def _by_channel(d) -> np.ndarray:
    """The two warpgroups' 64-row products (d[0], d[1]) as 128 channels, by the epilogue's row -> channel map."""
    out = np.zeros((128, d[0].shape[1]), dtype=np.int64)
    for wg in range(2):
        for warp in range(4):
            for row in range(16):
                out[_channel(wg, warp, row)] = d[wg][16 * warp + row]
    return out


def _a_tile_16bit(slice_bytes: np.ndarray, wg: int) -> np.ndarray:
    """The 64 x 16 A tile of one k16 product of warpgroup wg, assembled from every lane's registers with the
    PTX semantics of a 16-bit A fragment (R0: row g, k 2q..2q+1; R1: row g+8, same k; R2: row g, k 2q+8..;
    R3: row g+8), where the weight-only policy sets R0 = bytes (0, 2) of word x, R1 = bytes (0, 2) of word y,
    R2 = bytes (1, 3) of word x, R3 = bytes (1, 3) of word y. Entries are codes (decoding is exact)."""
    a = np.full((64, 16), -1, dtype=np.int64)
    for warp in range(4):
        for lane in range(32):
            g, q = lane // 4, lane % 4
            x, y = _lane_words(slice_bytes, wg, warp, lane)
            regs = [(x[0], x[2]), (y[0], y[2]), (x[1], x[3]), (y[1], y[3])]
            for r, (lo, hi) in enumerate(regs):
                row = 16 * warp + g + (8 if r % 2 else 0)
                k = 2 * q + (8 if r >= 2 else 0)
                a[row, k], a[row, k + 1] = lo, hi
    assert (a >= 0).all(), "every A element must come from exactly one lane register"
    return a


def _a_tile_e4m3(lo_bytes: np.ndarray, hi_bytes: np.ndarray, wg: int) -> np.ndarray:
    """The 64 x 32 A tile of one e4m3 k32 product of warpgroup wg (slices 2st and 2st + 1), PTX semantics of
    an 8-bit A fragment (R0: row g, k 4q..4q+3; R1: row g+8; R2: row g, k 16+4q..; R3: row g+8), with the
    policy's registers (lo.x, lo.y, hi.x, hi.y)."""
    a = np.full((64, 32), -1, dtype=np.int64)
    for warp in range(4):
        for lane in range(32):
            g, q = lane // 4, lane % 4
            lo = _lane_words(lo_bytes, wg, warp, lane)
            hi = _lane_words(hi_bytes, wg, warp, lane)
            regs = [lo[0], lo[1], hi[0], hi[1]]
            for r, word in enumerate(regs):
                row = 16 * warp + g + (8 if r % 2 else 0)
                k0 = 4 * q + (16 if r >= 2 else 0)
                a[row, k0:k0 + 4] = word
    assert (a >= 0).all()
    return a


def _slot_to_k(slot: int) -> int:
    """fp8_compute.h's fragment order: slot 4q + b of a 16-run holds k = 2q + D_SLOT[b]."""
    q, b = (slot % 16) // 4, slot % 4
    return slot - slot % 16 + 2 * q + D_SLOT[b]


@pytest.mark.parametrize("k", [16, 64, 96])
def test_weight_only_fragments_and_epilogue_give_the_product(k):
    g = sp.generator("sm90-frag-16", k, device="cpu")
    codes = torch.randint(0, 256, (128, k), generator=g, dtype=torch.uint8)
    acts = torch.randint(-3, 4, (k, 24), generator=g).numpy()  # B: K-major activations of 24 tokens
    staged = _block_bytes(codes)
    d = [np.zeros((64, 24), dtype=np.int64) for _ in range(2)]
    for s in range(k // 16):  # one k16 product per warpgroup per slice (the stage's slices in order)
        for wg in range(2):
            d[wg] += _a_tile_16bit(staged[s], wg) @ acts[16 * s:16 * s + 16]
    assert np.array_equal(_by_channel(d), codes.numpy().astype(np.int64) @ acts)


@pytest.mark.parametrize("k", [32, 128])
def test_e4m3_fragments_with_fragment_order_activations_give_the_product(k):
    g = sp.generator("sm90-frag-8", k, device="cpu")
    codes = torch.randint(0, 256, (128, k), generator=g, dtype=torch.uint8)
    acts = torch.randint(-3, 4, (k, 24), generator=g).numpy()  # natural k order
    staged = _block_bytes(codes)
    order = np.array([_slot_to_k(s) for s in range(k)])
    acts_slots = acts[order]  # what the activation quantizer stores: slot s holds k = slot_to_k(s)
    d = [np.zeros((64, 24), dtype=np.int64) for _ in range(2)]
    for st in range(k // 32):
        for wg in range(2):
            a = _a_tile_e4m3(staged[2 * st], staged[2 * st + 1], wg)
            d[wg] += a @ acts_slots[32 * st:32 * st + 32]
    assert np.array_equal(_by_channel(d), codes.numpy().astype(np.int64) @ acts)


def _swizzled_int8_box(codes: np.ndarray, stage_k: int) -> np.ndarray:
    """One stage's (128, stage_k) int8 box as the tensor copy stores it in shared memory (flat bytes): with the
    64-byte (stage_k 64) or 128-byte (stage_k 128) swizzle, 16-byte chunk c of row r lands at chunk
    c ^ ((r >> 1) & 3) or c ^ (r & 7), i.e. address bits 4.. XOR address bits 7.. (CUDA's swizzle modes)."""
    flat = np.zeros(128 * stage_k, dtype=np.int64)
    span = 3 if stage_k == 128 else 2  # bits of the chunk index the swizzle touches
    for r in range(128):
        for c in range(stage_k // 16):
            addr = r * stage_k + 16 * c
            phys = addr ^ (((addr >> 7) & ((1 << span) - 1)) << 4)
            flat[phys:phys + 16] = codes[r, 16 * c:16 * c + 16]
    return flat


def _a_tile_int8(flat: np.ndarray, stage_k: int, wg: int, i: int):
    """The 64 x 16 A tile of slice i of warpgroup wg as the int8 policy builds it (int8_mm_sm90.cu): a lane's
    first byte thread_offset = (64 wg + 16 warp + g) * stage_k + 4 (q >> 1); per row h (g, g + 8) the chunk
    16 (i ^ chunk_xor) with chunk_xor = (g >> 1) & 3 (64 k) or g & 7 (128 k); words at +0 (k 2q..) and +8
    (k 2q + 8..); the byte permute takes bytes 2 (q & 1) and + 1 of each. Also returns the 32 bank numbers of
    each 4-byte load of a warp (both words, both rows)."""
    a = np.full((64, 16), -1, dtype=np.int64)
    banks = {}
    for warp in range(4):
        for lane in range(32):
            g, q = lane // 4, lane % 4
            offset = (64 * wg + 16 * warp + g) * stage_k + 4 * (q >> 1)
            xor = ((g >> 1) & 3) if stage_k == 64 else (g & 7)
            j0 = 2 * (q & 1)
            for h in range(2):
                chunk = offset + h * 8 * stage_k + 16 * (i ^ xor)
                for word, kbase in ((0, 2 * q), (8, 2 * q + 8)):
                    addr = chunk + word
                    banks.setdefault((warp, h, word), []).append((addr // 4) % 32)
                    row = 16 * warp + g + 8 * h
                    a[row, kbase], a[row, kbase + 1] = flat[addr + j0], flat[addr + j0 + 1]
    assert (a >= 0).all(), "every A element must come from exactly one lane register"
    return a, banks


@pytest.mark.parametrize("stage_k", [64, 128])
def test_int8_fragments_from_the_swizzled_rows_give_the_product(stage_k):
    g = sp.generator("sm90-frag-int8", stage_k, device="cpu")
    codes = torch.randint(0, 256, (128, stage_k), generator=g, dtype=torch.uint8).numpy().astype(np.int64)
    acts = torch.randint(-3, 4, (stage_k, 24), generator=g).numpy()
    flat = _swizzled_int8_box(codes, stage_k)
    d = [np.zeros((64, 24), dtype=np.int64) for _ in range(2)]
    for i in range(stage_k // 16):
        for wg in range(2):
            a, banks = _a_tile_int8(flat, stage_k, wg, i)
            d[wg] += a @ acts[16 * i:16 * i + 16]
            for (warp, h, word), b in banks.items():
                # lanes q and q ^ 1 read the same word (a broadcast); otherwise every load of a warp is
                # conflict-free: 16 distinct words, 16 distinct banks
                assert len(set(b)) == 16, (stage_k, wg, i, warp, h, word, b)
    assert np.array_equal(_by_channel(d), codes @ acts)


def test_epilogue_store_index_matches_the_accumulator_fragment():
    """The epilogue writes acc[p][4i + 2h + e] (PTX: row g + 8h, token 8i + 2q + e of part p's kPartN) to
    channel 64 wg + 16 warp + 8h + g and token p * kPartN + 8i + 2q + e: the channel _channel() gives that
    row, and every (channel, token) of the tile exactly once."""
    for tpw in (32, 64, 128):
        tokens = 2 * tpw
        part_n = min(tokens, 128)
        seen = np.zeros((128, tokens), dtype=np.int64)
        for wg in range(2):
            for warp in range(4):
                for lane in range(32):
                    g, q = lane // 4, lane % 4
                    for p in range(tokens // part_n):
                        for i in range(part_n // 8):
                            for h in range(2):
                                for e in range(2):
                                    c = 64 * wg + 16 * warp + 8 * h + g
                                    assert c == _channel(wg, warp, g + 8 * h)
                                    seen[c, p * part_n + 8 * i + 2 * q + e] += 1
        assert (seen == 1).all(), tpw
