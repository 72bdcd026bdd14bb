"""The Triton kernel behind nla.fast_attention.decode_attention (imported only on GPUs: Triton is GPU-only here).

One program per (row, key head): the key head's query heads (padded to 16 rows for the tensor cores) attend to the
shared prefix, then to the row's own keys 0..t, with an online softmax in fp32. IEEE keeps fp32 inputs out of TF32,
so the fp32 checks compare exact math.
"""

import triton
import triton.language as tl


@triton.jit
def scan(q, kp, vp, n, s_l, m, den, acc, scale, D: tl.constexpr, BLOCK: tl.constexpr, IEEE: tl.constexpr):
    """Fold keys 0..n-1 at kp, vp (row stride s_l) into the online softmax state (m, den, acc)."""
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
def decode_kernel(Q, SK, SV, RK, RV, OUT, T, Lp, scale, s_qb, s_skh, s_skl, s_rkb, s_rkh, s_rkl, s_ob,
                  G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr,
                  IEEE: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    g = tl.arange(0, GP)  # this key head's query heads, padded to a tensor-core tile
    d = tl.arange(0, D)
    heads = h * G + g
    q = tl.load(Q + b * s_qb + heads[:, None] * D + d[None, :], mask=g[:, None] < G, other=0.0)  # (GP, D)
    m = tl.full((GP,), float("-inf"), tl.float32)
    den = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    m, den, acc = scan(q, SK + h * s_skh, SV + h * s_skh, Lp, s_skl, m, den, acc, scale, D, BLOCK, IEEE)
    n_row = tl.load(T) + 1  # the row's own keys written so far: positions 0..t
    m, den, acc = scan(q, RK + b * s_rkb + h * s_rkh, RV + b * s_rkb + h * s_rkh, n_row, s_rkl, m, den, acc,
                       scale, D, BLOCK, IEEE)
    out = acc / den[:, None]
    tl.store(OUT + b * s_ob + heads[:, None] * D + d[None, :], out.to(OUT.dtype.element_ty),
             mask=g[:, None] < G)
