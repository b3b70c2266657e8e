"""luna_lra.ops.triton_compile: the Pallas -> Triton IR capture (jax only) and, where the `triton`
package is installed, the offline compile for sm_90 with its resource readings."""

import importlib.util

import jax
import pytest

from luna_lra.ops import triton_compile


@pytest.mark.parametrize("kind", ["pack", "unpack"])
def test_lowering_captures_three_kernels(kind):
    lowered = triton_compile.lower_to_triton(kind, 2, 2, 300, 16, 32, "bfloat16", 0.1)
    assert [x.kernel for x in lowered] == list(triton_compile.KERNELS)
    for x in lowered:
        assert f"tt.func public @luna_attn_{x.kernel}" in x.ttir
        assert x.num_warps in (4, 8) and len(x.grid) >= 1


def test_markdown_lists_every_row():
    meta = dict(arch=90, shared_limit_bytes=227 * 1024, triton_version="t", jax_version="j",
                commit="abc", matmul_precision="default", batch=2, heads=2, command="c", wall_s=1.0)
    rows = [dict(op="pack", n=300, l=16, head_dim=32, dtype="bfloat16", dropout=0.1, kernel=k,
                 num_warps=4, grid=[2, 1], registers=64, spill_store_bytes=0, shared_bytes=4096,
                 tensor_core="HGMMA", status="ok") for k in triton_compile.KERNELS]
    rows.append(dict(op="unpack", n=300, l=16, head_dim=32, dtype="float32", dropout=0.0,
                     kernel="all", status="error: X"))
    table = [line for line in triton_compile.to_markdown(meta, rows).splitlines()
             if line.startswith("| pack") or line.startswith("| unpack")]
    assert len(table) == 4 and table[-1].endswith("| error: X |")
    assert "4 kernels: 1 fail" in triton_compile.to_markdown(meta, rows)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="needs the triton package (Linux x86-64: pip install -e '.[triton]')")
def test_compiles_for_sm90_within_limits():
    for x in triton_compile.lower_to_triton("pack", 2, 2, 300, 256, 64, "bfloat16", 0.1):
        r = triton_compile.compile_triton(x, 90)
        assert 0 < r["shared_bytes"] <= triton_compile.SHARED_LIMIT[90]
        assert r["registers"] <= 255 and r["spill_store_bytes"] == 0
        assert "HGMMA" in r["tensor_core"] or "HMMA" in r["tensor_core"]


def test_float32_dot_precision_follows_jax():
    # Triton IR spells TF32 dots `inputPrecision = tf32` and IEEE float32 ones without it.
    tf32 = lambda lowered: {"inputPrecision = tf32" in x.ttir for x in lowered}
    assert tf32(triton_compile.lower_to_triton("pack", 2, 2, 300, 16, 32, "float32", 0.0)) == {
        True}  # JAX's default on a GPU, as in XLA's own float32 matmuls
    with jax.default_matmul_precision("highest"):
        assert tf32(triton_compile.lower_to_triton("unpack", 2, 2, 300, 16, 32, "float32",
                                                   0.0)) == {False}
