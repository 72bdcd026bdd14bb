"""The Triton kernel behind nla.fast.attention.decode_attention (imported only on GPUs: Triton is GPU-only here).

One program per (group of ROWS rows, key head). Its query rows are the ROWS rows' query heads for that key head
(ROWS x G, padded to at least 16 for the tensor cores). They attend to the shared prefix together, so the prefix is
read once per group rather than once per row. Then each row's own keys 0..t are folded in, row by row, into the
query rows of that row only (the others are masked), with an online softmax in fp32. IEEE keeps fp32 inputs out of
TF32, so the fp32 checks compare exact math.
"""

import triton
import triton.language as tl


@triton.jit
def scan(q, kp, vp, n, s_l, m, den, acc, scale, active, D: tl.constexpr, BLOCK: tl.constexpr,
         IEEE: tl.constexpr, MASKED: tl.constexpr):
    """Fold keys 0..n-1 at kp, vp (row stride s_l) into the online softmax state (m, den, acc) of the query rows
    `active` (all of them unless MASKED; the others keep their state)."""
    d = tl.arange(0, D)
    for start in range(0, n, BLOCK):
        pos = start + tl.arange(0, BLOCK)
        valid = pos < n
        k = tl.load(kp + pos[:, None] * s_l + d[None, :], mask=valid[:, None], other=0.0)  # (BLOCK, D)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = tl.where(valid[None, :], s * scale, float("-inf"))  # (GP, BLOCK) fp32
        if MASKED:
            s = tl.where(active[:, None], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: exp(-inf - 0) = 0
            p = tl.exp(s - m_use[:, None])
            alpha = tl.exp(m - m_use)
        else:
            m_new = tl.maximum(m, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m - m_new)
        v = tl.load(vp + pos[:, None] * s_l + d[None, :], mask=valid[:, None], other=0.0)
        if IEEE:
            pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        den = den * alpha + tl.sum(p, 1)
        m = m_new
    return m, den, acc


@triton.jit
def decode_kernel(Q, SK, SV, RK, RV, OUT, T, B, Lp, scale, s_qb, s_skh, s_skl, s_rkb, s_rkh, s_rkl, s_ob,
                  G: tl.constexpr, GP: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr,
                  IEEE: tl.constexpr):
    b0 = tl.program_id(0) * ROWS
    h = tl.program_id(1)
    i = tl.arange(0, GP)  # query rows: row b0 + i // G, query head h * G + i % G
    r = i // G
    rows = b0 + r
    live = (r < ROWS) & (rows < B)
    d = tl.arange(0, D)
    q_off = rows[:, None] * s_qb + (h * G + i % G)[:, None] * D + d[None, :]
    q = tl.load(Q + q_off, mask=live[:, None], other=0.0)  # (GP, D)
    m = tl.full((GP,), float("-inf"), tl.float32)
    den = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    m, den, acc = scan(q, SK + h * s_skh, SV + h * s_skh, Lp, s_skl, m, den, acc, scale, live, D, BLOCK, IEEE,
                       False)
    n_row = tl.load(T) + 1  # the row's own keys written so far: positions 0..t
    if ROWS == 1:
        m, den, acc = scan(q, RK + b0 * s_rkb + h * s_rkh, RV + b0 * s_rkb + h * s_rkh, n_row, s_rkl, m, den, acc,
                           scale, live, D, BLOCK, IEEE, False)
    else:
        for j in range(ROWS):
            n = tl.where(b0 + j < B, n_row, 0)
            m, den, acc = scan(q, RK + (b0 + j) * s_rkb + h * s_rkh, RV + (b0 + j) * s_rkb + h * s_rkh, n, s_rkl,
                               m, den, acc, scale, live & (r == j), D, BLOCK, IEEE, True)
    out = acc / den[:, None]
    tl.store(OUT + rows[:, None] * s_ob + (h * G + i % G)[:, None] * D + d[None, :], out.to(OUT.dtype.element_ty),
             mask=live[:, None])
