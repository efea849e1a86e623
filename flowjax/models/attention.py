"""Multi-head attention through a fused kernel, with a forward-mode (JVP) rule.

    O = attention(Q, K, V)      Q, K, V, O: [B, T, H, Dh]  (batch, tokens, heads, head width)

per head ``O = softmax(S) V`` with logits ``S = s Q K^T``, ``s = 1 / sqrt(Dh)``, the softmax
over the key axis. The primal is :func:`jax.nn.dot_product_attention` with the requested
``implementation`` (``"xla"``: plain XLA ops, any backend; ``"cudnn"``: cuDNN's fused
flash-attention kernel on NVIDIA GPUs, float16/bfloat16 only; ``None``: JAX's choice).

Why a rule. cuDNN's kernel is a ``custom_vjp`` function: reverse mode works, forward mode
(``jax.jvp``, which MeanFlow and FreeFlow apply to the network) does not. :func:`attention`
with ``jvp_rule=True`` is a ``custom_jvp`` function whose primal runs the fused kernel and
whose tangent is the closed form below, so ``jax.jvp`` keeps the fused forward.

The tangent. With tangents ``dQ, dK, dV`` and ``P = softmax(S)`` row-wise,

    dS      = s (dQ K^T + Q dK^T)
    dP_ij   = P_ij (dS_ij - c_i),            c_i = sum_j P_ij dS_ij      (softmax's Jacobian)
    dO      = dP V + P dV
            = (P * dS) V  -  c O  +  P dV                                 (* elementwise)

The three terms: ``P dV`` is the attention of ``(Q, K)`` applied to the tangent values;
``(P * dS) V`` is the values weighted by the tangent-modulated probabilities; ``- c O`` is the
correction from the softmax normaliser, using the primal output ``O`` of the fused kernel
(not recomputed). The rule recomputes ``P`` once per call, in float32, from ``Q, K``; all four
``T x T`` products (``dQ K^T``, ``Q dK^T``, ``(P * dS) V``, ``P dV``) are batched matrix
multiplies. Every tangent operation is linear in ``(dQ, dK, dV)`` with coefficients that
depend only on the primal, so JAX can transpose it: ``jax.grad`` of a function that calls
:func:`attention` with the rule (and ``jax.grad`` of a function containing ``jax.jvp`` of it,
as in MeanFlow's loss) works; reverse mode then runs the transpose of this tangent, i.e. the
same ``T x T`` products as XLA's own attention gradient, while the forward stays fused.

Precision: ``P``, ``dS`` and ``c`` are computed in float32 and every product accumulates in
float32; the two products with the values (``(P * dS) V``, ``P dV``) take their operands in
the values' dtype (bf16 under mixed precision, as a flash-attention kernel does: a float32
matmul would run at a fraction of the bf16 rate on an accelerator). The tangent is returned in
the dtype of ``O``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from flowjax.types import Array

IMPLEMENTATIONS = (None, "xla", "cudnn")


def check_implementation(implementation) -> None:
    """Raise a clear error for an attention implementation JAX does not provide."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; use one of {IMPLEMENTATIONS} "
            f"('cudnn' needs an NVIDIA GPU and bfloat16/float16 inputs)"
        )


def _probs(q: Array, k: Array) -> Array:
    """``P = softmax(s Q K^T)`` in float32: ``[B, T, H, Dh] x2 -> [B, H, T, S]``."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
    return jax.nn.softmax(scale * logits, axis=-1)


def reference_attention(q: Array, k: Array, v: Array) -> Array:
    """Plain attention ``softmax(s Q K^T) V`` in float32 (the definition; any transformation)."""
    p = _probs(q, k)
    return jnp.einsum("bhts,bshd->bthd", p, v.astype(jnp.float32)).astype(v.dtype)


def attention_tangent(q, k, v, o, dq, dk, dv) -> Array:
    """``dO = (P * dS) V - c O + P dV`` (module docstring) for primal ``O`` and tangents."""
    f32 = jnp.float32
    scale = 1.0 / math.sqrt(q.shape[-1])
    p = _probs(q, k)
    ds = scale * (
        jnp.einsum("bthd,bshd->bhts", dq, k, preferred_element_type=f32)
        + jnp.einsum("bthd,bshd->bhts", q, dk, preferred_element_type=f32)
    )
    pds = p * ds
    c = jnp.sum(pds, axis=-1)  # [B, H, T]
    # The two products with the values take their operands in the compute dtype (bf16 on an
    # accelerator: float32 matmuls run at a fraction of the bf16 rate) and accumulate in f32.
    cd = jnp.promote_types(v.dtype, dv.dtype)
    out = jnp.einsum("bhts,bshd->bthd", pds.astype(cd), v.astype(cd), preferred_element_type=f32)
    out = out + jnp.einsum(
        "bhts,bshd->bthd", p.astype(cd), dv.astype(cd), preferred_element_type=f32
    )
    out = out - jnp.transpose(c, (0, 2, 1))[..., None] * o.astype(f32)
    return out.astype(o.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _attention_with_rule(q, k, v, implementation):
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


@_attention_with_rule.defjvp
def _attention_jvp(implementation, primals, tangents):
    q, k, v = primals
    dq, dk, dv = tangents  # zeros are instantiated (symbolic_zeros=False)
    o = _attention_with_rule(q, k, v, implementation)
    return o, attention_tangent(q, k, v, o, dq, dk, dv)


def attention(q: Array, k: Array, v: Array, *, implementation=None, jvp_rule: bool = False):
    """``softmax(Q K^T / sqrt(Dh)) V`` for ``[B, T, H, Dh]`` inputs (module docstring).

    ``implementation`` is passed to :func:`jax.nn.dot_product_attention`; ``jvp_rule=True``
    wraps it in the ``custom_jvp`` rule so forward-mode differentiation works (and keeps the
    fused forward) for every implementation.
    """
    check_implementation(implementation)
    if q.ndim != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(
            f"attention takes q, k, v of one shape [B, T, heads, head_dim]; got "
            f"{q.shape}, {k.shape}, {v.shape}"
        )
    if jvp_rule:
        return _attention_with_rule(q, k, v, implementation)
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
