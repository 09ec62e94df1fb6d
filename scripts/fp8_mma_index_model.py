"""CPU model of gemm_mma.cu's index logic, for review without a GPU (no CUDA needed; numpy + torch for e4m3).

It replays, block by block and lane by lane, what fp8c_mma_kernel does with bytes: the raster (block -> tile),
the cp.async pieces into a stage (weight k-tile pairs in 8-byte pieces, activation rows with the XOR swizzle,
zero-fill past M, N and K), the ldmatrix.x4 and LDS.128 fragment loads, the tensor-core products with the
fragment semantics of the PTX ISA (m16n8k32 e4m3 for sm_89/sm_120; the f16 path's two m16n8k16 for
sm_90/sm_100), the epilogue (scale, bias, the lane^4 shuffle, the shared-memory transpose) and the guarded
16-byte stores, and compares with an fp64 reference of the contract. It also checks that every shared-memory
access pattern is free of bank conflicts. Keep it in step with the kernel when either changes.

Usage: python scripts/fp8_mma_index_model.py   (about a minute)
"""

import numpy as np
import torch

E4 = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float64).numpy()


def slot_to_k(s):
    q = (s & 15) >> 2
    b = s & 3
    return (s & ~15) + 2 * q + (8 if b & 1 else 0) + (b >> 1)


def block32_slot(n):
    r = n & 31
    return (n - r) + 8 * ((r & 7) >> 1) + 2 * (r >> 3) + (r & 1)


def marlin(codes):
    N, K = codes.shape
    P = np.zeros((K // 16, 4 * N, 4), np.uint8)
    d = (0, 8, 1, 9)
    for kt in range(K // 16):
        for c in range(N // 64):
            for t in range(32):
                for w in range(4):
                    for h in range(2):
                        for b in range(4):
                            P[kt, 256 * c + 8 * t + 2 * w + h, b] = codes[
                                64 * c + 16 * w + 8 * h + t // 4, 16 * kt + 2 * (t % 4) + d[b]
                            ]
    return P.reshape(-1)  # bytes


def run(M, N, K, path, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (N, K)).astype(np.uint8)
    codes[(codes & 0x7F) == 0x7F] ^= 1
    xnat = rng.integers(0, 256, (M, K)).astype(np.uint8)
    xnat[(xnat & 0x7F) == 0x7F] ^= 1
    xq = np.zeros_like(xnat)
    for s in range(K):
        xq[:, s] = xnat[:, slot_to_k(s)]
    xs = rng.random(M) + 0.5
    s_nat = rng.random(N) + 0.5
    bias = rng.standard_normal(N)
    s_perm = np.zeros(N)
    for n in range(N):
        s_perm[block32_slot(n)] = s_nat[n]
    Wb = marlin(codes)
    Xb = xq.reshape(-1)
    out = np.full((M + 1) * N, np.nan)  # flat, guard row
    col_tiles = (N + 127) // 128
    row_tiles = (M + 127) // 128
    nk = (K + 63) // 64
    for bid in range(col_tiles * row_tiles):
        cw = min(col_tiles, 16)
        chunk = bid // (cw * row_tiles)
        inc = bid - chunk * cw * row_tiles
        cc = min(cw, col_tiles - chunk * cw)
        n0 = (chunk * cw + inc % cc) * 128
        m0 = (inc // cc) * 128
        acc = np.zeros((8, 32, 4, 4, 4))
        for kb in range(nk):
            st = np.zeros(16384, np.uint8)  # [W 8KB][X 8KB]
            for tid in range(256):
                par = tid & 1
                wv = (tid >> 1) & 3
                t = tid >> 3
                for p in range(2):
                    for c in range(2):
                        kt = kb * 4 + 2 * p + par
                        col = n0 + 64 * c
                        ok = kt < K // 16 and col < N
                        dst = (p * 2 + c) * 2048 + (wv * 32 + (t ^ (2 * wv))) * 16 + 8 * par
                        if ok:
                            src = (kt * 4 * N + 4 * col + 8 * t + 2 * wv) * 4
                            st[dst : dst + 8] = Wb[src : src + 8]
                r = tid >> 2
                jx = tid & 3
                xdst = 8192 + r * 64 + ((jx ^ ((r >> 1) & 3)) << 4)
                for i in range(2):
                    row = m0 + r + 64 * i
                    kk = kb * 64 + 16 * jx
                    if row < M and kk < K:
                        src = row * K + kk
                        st[xdst + 4096 * i : xdst + 4096 * i + 16] = Xb[src : src + 16]
            for warp in range(8):
                wc = warp & 1
                wt = warp >> 1
                lanes = np.arange(32)
                mi = lanes >> 3
                r = wt * 32 + 8 * (mi >> 1) + (lanes & 7)
                b_lane = r * 64 + (((mi & 1) ^ ((r >> 1) & 3)) << 4)

                def word(addr):
                    return st[addr : addr + 4]

                def ldsm(base):  # returns regs[lane][i] as 4-byte arrays
                    regs = np.zeros((32, 4, 4), np.uint8)
                    for i in range(4):
                        for t in range(32):
                            rowaddr = base[8 * i + (t >> 2)]
                            regs[t, i] = st[rowaddr + 4 * (t & 3) : rowaddr + 4 * (t & 3) + 4]
                    return regs

                def lds(addrs):
                    return np.stack([st[a : a + 16].reshape(4, 4) for a in addrs])

                for s_ in range(2):
                    B01 = ldsm(8192 + (b_lane ^ (32 * s_)))
                    B23 = ldsm(8192 + (b_lane ^ (32 * s_)) + 1024)
                    bf = np.zeros((32, 4, 2, 4), np.uint8)
                    bf[:, 0, 0] = B01[:, 0]
                    bf[:, 0, 1] = B01[:, 1]
                    bf[:, 1, 0] = B01[:, 2]
                    bf[:, 1, 1] = B01[:, 3]
                    bf[:, 2, 0] = B23[:, 0]
                    bf[:, 2, 1] = B23[:, 1]
                    bf[:, 3, 0] = B23[:, 2]
                    bf[:, 3, 1] = B23[:, 3]
                    a = np.zeros((32, 4, 4, 4), np.uint8)
                    a_lane = wc * 2048 + lanes * 16
                    for wi in range(4):
                        addrs = (a_lane + s_ * 4096 + wi * 512) ^ (32 * wi)
                        a[:, wi] = lds(addrs)
                    for wi in range(4):
                        for jj in range(4):
                            if path == "qmma":
                                A = np.zeros((16, 32))
                                Bm = np.zeros((32, 8))
                                for t in range(32):
                                    gg = t >> 2
                                    qq = t & 3
                                    for i in range(4):
                                        A[gg, 4 * qq + i] = E4[a[t, wi, 0, i]]
                                        A[gg + 8, 4 * qq + i] = E4[a[t, wi, 1, i]]
                                        A[gg, 16 + 4 * qq + i] = E4[a[t, wi, 2, i]]
                                        A[gg + 8, 16 + 4 * qq + i] = E4[a[t, wi, 3, i]]
                                        Bm[4 * qq + i, gg] = E4[bf[t, jj, 0, i]]
                                        Bm[16 + 4 * qq + i, gg] = E4[bf[t, jj, 1, i]]
                                D = A @ Bm
                            else:  # f16 path: two m16n8k16 with converted pairs
                                D = np.zeros((16, 8))
                                for half in range(2):
                                    A = np.zeros((16, 16))
                                    Bm = np.zeros((16, 8))
                                    for t in range(32):
                                        gg = t >> 2
                                        qq = t & 3
                                        ra = a[t, wi, 2 * half]
                                        rb = a[t, wi, 2 * half + 1]  # row g, row g+8
                                        # ah = {lo(ra), lo(rb), hi(ra), hi(rb)} (kernel order)
                                        A[gg, 2 * qq] = E4[ra[0]]
                                        A[gg, 2 * qq + 1] = E4[ra[1]]
                                        A[gg + 8, 2 * qq] = E4[rb[0]]
                                        A[gg + 8, 2 * qq + 1] = E4[rb[1]]
                                        A[gg, 2 * qq + 8] = E4[ra[2]]
                                        A[gg, 2 * qq + 9] = E4[ra[3]]
                                        A[gg + 8, 2 * qq + 8] = E4[rb[2]]
                                        A[gg + 8, 2 * qq + 9] = E4[rb[3]]
                                        rbb = bf[t, jj, half]
                                        Bm[2 * qq, gg] = E4[rbb[0]]
                                        Bm[2 * qq + 1, gg] = E4[rbb[1]]
                                        Bm[2 * qq + 8, gg] = E4[rbb[2]]
                                        Bm[2 * qq + 9, gg] = E4[rbb[3]]
                                    D += A @ Bm
                            for t in range(32):
                                gg = t >> 2
                                qq = t & 3
                                acc[warp, t, wi, jj] += np.array(
                                    [D[gg, 2 * qq], D[gg, 2 * qq + 1], D[gg + 8, 2 * qq], D[gg + 8, 2 * qq + 1]]
                                )
        # epilogue
        tile = np.full((128, 128), np.nan)
        for warp in range(8):
            wc = warp & 1
            wt = warp >> 1
            col_ok = n0 + 64 * wc < N
            v = {}
            for t in range(32):
                gg = t >> 2
                qq = t & 3
                xv = [
                    [
                        (xs[m0 + wt * 32 + 8 * j + 2 * qq + e] if m0 + wt * 32 + 8 * j + 2 * qq + e < M else 0.0)
                        for e in range(2)
                    ]
                    for j in range(4)
                ]
                for wi in range(4):
                    for h in range(2):
                        ch = 16 * wi + 8 * h + gg
                        sc = s_perm[n0 + 64 * wc + block32_slot(ch)] if col_ok else 0.0
                        bi = bias[n0 + 64 * wc + ch] if col_ok else 0.0
                        for j in range(4):
                            v[(t, wi, h, j)] = (
                                acc[warp, t, wi, j, 2 * h] * xv[j][0] * sc + bi,
                                acc[warp, t, wi, j, 2 * h + 1] * xv[j][1] * sc + bi,
                            )
            for t in range(32):
                gg = t >> 2
                qq = t & 3
                odd = gg & 1
                for (tt, wi, h, j), (v0, v1) in list(v.items()):
                    if tt != t:
                        continue
                    pv = v[(t ^ 4, wi, h, j)]
                    other = pv[1] if not odd else pv[0]  # partner sends (odd?v0:v1) from ITS perspective
                    # partner of even lane is odd: sends its v0; partner of odd lane is even: sends its v1
                    other = pv[0] if not odd else pv[1]
                    lo = other if odd else v0
                    hi = v1 if odd else other
                    row = wt * 32 + 8 * j + 2 * qq + (1 if odd else 0)
                    col = 64 * wc + 16 * wi + 8 * h + (gg & ~1)
                    tile[row, col] = lo
                    tile[row, col + 1] = hi
        for idx in range(2048):
            row = idx >> 4
            chunk = idx & 15
            tok = m0 + row
            ch = n0 + 8 * chunk
            if tok < M and ch < N:
                out[tok * N + ch : tok * N + ch + 8] = tile[row, 8 * chunk : 8 * chunk + 8]
    out = out.reshape(M + 1, N)
    ref = (E4[xnat] @ E4[codes].T) * xs[:, None] * s_nat[None, :] + bias[None, :]
    ok = np.isnan(out[M]).all() and not np.isnan(out[:M]).any() and np.allclose(out[:M], ref, rtol=1e-9, atol=1e-9)
    print(
        path,
        M,
        N,
        K,
        "ok" if ok else "FAIL",
        np.nanmax(np.abs(out[:M] - ref)) if not np.isnan(out[:M]).all() else "all nan",
    )
    return ok


def bank_checks():
    exec(compile(BANKS, "banks", "exec"), {"np": np})


BANKS = r"""
def conflicts(addrs, size):
    # max ways over phases: phase = lanes grouped so each phase moves <= 128 bytes
    per = 128 // size
    worst = 1
    for ph in range(0, len(addrs), per):
        banks = {}
        for a in addrs[ph:ph+per]:
            for b in range(a // 4, (a + size) // 4):
                banks.setdefault(b % 32, set()).add(b // 32)  # distinct 128B rows on the same bank
        worst = max(worst, max(len(v) for v in banks.values()))
    return worst
lanes = np.arange(32)
# A loads
for wc in range(2):
    for st in range(2):
        for wi in range(4):
            a = ((wc*2048 + lanes*16 + st*4096 + wi*512) ^ (32*wi)).tolist()
            assert conflicts(a, 16) == 1, ("A", wc, st, wi)
# ldmatrix: per matrix 8 row addresses of 16B
for wt in range(4):
    for st in range(2):
        for extra in (0, 1024):
            mi = lanes >> 3; r = wt*32 + 8*(mi >> 1) + (lanes & 7)
            b = (r*64 + (((mi & 1) ^ ((r >> 1) & 3)) << 4)) ^ (32*st)
            b = b + extra
            for m in range(4):
                assert conflicts(b[8*m:8*m+8].tolist(), 16) == 1, ("B", wt, st, m)
# weight 8-byte copies (per warp of threads)
for warp in range(8):
    tid = warp*32 + lanes
    par = tid & 1; wv = (tid >> 1) & 3; t = tid >> 3
    for p in range(2):
        for c in range(2):
            d = ((p*2 + c)*2048 + (wv*32 + (t ^ (2*wv)))*16 + 8*par).tolist()
            assert conflicts(d, 8) == 1, ("Wcp", warp)
# activation 16-byte copies
for warp in range(8):
    tid = warp*32 + lanes; r = tid >> 2; jx = tid & 3
    d = (r*64 + ((jx ^ ((r >> 1) & 3)) << 4)).tolist()
    print("act cp ways", conflicts(d, 16), end="; ")
# epilogue STS.32
P = 272
for wt in range(4):
    for wc in range(2):
        g = lanes >> 2; q = lanes & 3; odd = g & 1
        for j in range(4):
            for wi in range(4):
                for h in range(2):
                    d = ((wt*32 + 8*j + 2*q + odd)*P + (64*wc + 16*wi + 8*h + (g & ~1))*2).tolist()
                    assert conflicts(d, 4) == 1, ("epi", wt, wc, j, wi, h)
# epilogue LDS.128
for warp in range(8):
    for i in range(8):
        idx = warp*32 + lanes + i*256; row = idx >> 4; ch = idx & 15
        d = (row*P + ch*16).tolist()
        assert conflicts(d, 16) == 1
print("\nall conflict-free")
"""

if __name__ == "__main__":
    bank_checks()
    ok = True
    for path in ("qmma", "f16"):
        for M, N, K in [(3, 64, 32), (17, 192, 96), (130, 192, 160), (5, 320, 64), (200, 2176, 32)]:
            ok &= run(M, N, K, path)
    print("index model:", "ok" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)
