"""Multi-head attention through a fused kernel, with a forward-mode (JVP) rule.

    O = attention(Q, K, V, key_mask=M, scale=s)
    Q, O: [B, T, H, Dh]   K, V: [B, S, G, Dh]   M: [B, S] bool   (G divides H)

per head ``O = softmax(S) V`` with logits ``S = s Q K^T`` (``s = 1 / sqrt(Dh)`` unless given),
the softmax over the key axis. Keys with ``M = False`` (padding of a mixed-size batch) take no
part: their logits are ``-inf`` before the softmax, so a query's output is the same whatever
the padded keys hold and however many there are (every row must keep one valid key). With
fewer key/value heads than query heads (grouped-query attention, ``G < H``), query head ``h``
reads key/value head ``h // (H / G)``, JAX's grouping.

The primal is :func:`jax.nn.dot_product_attention` with the requested
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


def use_jvp_rule(jvp_rule: bool | None, implementation, forward_mode: bool) -> bool:
    """A network's ``attention_jvp_rule`` setting resolved: ``None`` turns the rule on exactly
    when the network is differentiated in forward mode (``forward_mode``: average-velocity
    networks, which MeanFlow and FreeFlow push through ``jax.jvp``) with ``"cudnn"``, whose
    kernel has no forward-mode rule of its own."""
    if jvp_rule is None:
        return bool(forward_mode and implementation == "cudnn")
    return bool(jvp_rule)


def _scale(q: Array, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _expand_heads(q: Array, *kv: Array) -> tuple[Array, ...]:
    """Key/value arrays ``[B, S, G, Dh]`` repeated to the ``H`` query heads (each ``H/G``
    times, consecutively: query head ``h`` reads ``h // (H/G)``)."""
    reps = q.shape[2] // kv[0].shape[2]
    return tuple(jnp.repeat(a, reps, axis=2) if reps > 1 else a for a in kv)


def _probs(q: Array, k: Array, key_mask: Array | None = None, scale=None) -> Array:
    """``P = softmax(s Q K^T)`` in float32 over the unmasked keys: ``-> [B, H, T, S]``."""
    (k,) = _expand_heads(q, k)
    logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
    logits = _scale(q, scale) * logits
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)


def reference_attention(
    q: Array, k: Array, v: Array, *, key_mask: Array | None = None, scale=None
) -> Array:
    """Plain attention ``softmax(s Q K^T) V`` in float32 (the definition; any transformation)."""
    p = _probs(q, k, key_mask, scale)
    (v,) = _expand_heads(q, v)
    return jnp.einsum("bhts,bshd->bthd", p, v.astype(jnp.float32)).astype(v.dtype)


def attention_tangent(q, k, v, o, dq, dk, dv, key_mask=None, scale=None) -> Array:
    """``dO = (P * dS) V - c O + P dV`` (module docstring) for primal ``O`` and tangents."""
    f32 = jnp.float32
    p = _probs(q, k, key_mask, scale)
    k, v, dk, dv = _expand_heads(q, k, v, dk, dv)
    ds = _scale(q, scale) * (
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


def _fused(q, k, v, key_mask, implementation, scale):
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, scale=scale, implementation=implementation
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _attention_with_rule(q, k, v, key_mask, implementation, scale):
    return _fused(q, k, v, key_mask, implementation, scale)


@_attention_with_rule.defjvp
def _attention_jvp(implementation, scale, primals, tangents):
    q, k, v, key_mask = primals
    dq, dk, dv, _ = tangents  # zeros are instantiated (symbolic_zeros=False); the mask is bool
    o = _attention_with_rule(q, k, v, key_mask, implementation, scale)
    return o, attention_tangent(q, k, v, o, dq, dk, dv, key_mask, scale)


def attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    key_mask: Array | None = None,
    scale: float | None = None,
    implementation=None,
    jvp_rule: bool = False,
):
    """``softmax(s Q K^T) V`` (module docstring): ``q [B, T, H, Dh]``, ``k, v [B, S, G, Dh]``.

    ``key_mask [B, S]`` (bool) hides padded keys; ``scale`` is the logit scale (default
    ``1/sqrt(Dh)``); ``G`` key/value heads serve ``H`` query heads when ``G`` divides ``H``.
    ``implementation`` is passed to :func:`jax.nn.dot_product_attention`; ``jvp_rule=True``
    wraps it in the ``custom_jvp`` rule so forward-mode differentiation works (and keeps the
    fused forward) for every implementation.
    """
    check_implementation(implementation)
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
        raise ValueError(
            f"attention takes q [B, T, heads, head_dim] and k, v of one shape [B, S, kv_heads, "
            f"head_dim]; got {q.shape}, {k.shape}, {v.shape}"
        )
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(
            f"q {q.shape} and k, v {k.shape} must share batch and head_dim, and the key/value "
            f"heads must divide the query heads"
        )
    if key_mask is not None:
        key_mask = jnp.asarray(key_mask)
        if key_mask.shape != k.shape[:2] or key_mask.dtype != jnp.bool_:
            raise ValueError(
                f"key_mask must be bool [B, S] = {k.shape[:2]} (True at valid keys); got "
                f"{key_mask.dtype} {key_mask.shape}"
            )
    if scale is not None:
        scale = float(scale)
    if jvp_rule:
        return _attention_with_rule(q, k, v, key_mask, implementation, scale)
    return _fused(q, k, v, key_mask, implementation, scale)
