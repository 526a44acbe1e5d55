"""Every memory's parallel (training) form against its naive recurrent reference: outputs and
every gradient, with respect to the inputs and the memory's parameters (as flash-linear-attention
tests each kernel against ``naive.py``)."""

from __future__ import annotations

import pytest
import torch

from engram.streaming import (
    MEMORY_KINDS,
    EvictionMemory,
    MemoryOptions,
    StreamingConfig,
    StreamingTransformer,
    evicted_mask,
    memory_for,
)
from engram.streaming.memories import ParallelInputs, naive_recurrent, parallel

B, H, T, D_HEAD, D_MODEL = 2, 2, 17, 4, 8
OPTIONS = MemoryOptions(top_k=2, capacity=3, rate=0.05, trainable_rate=True)
INPUTS = ("h", "q", "k", "v", "importance", "assoc_keys")


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (B, H, T, D_HEAD)
    tensors = {
        "h": 0.5 * torch.randn(B, T, D_MODEL, generator=gen),
        "q": torch.randn(shape, generator=gen),
        "k": torch.randn(shape, generator=gen),
        "v": torch.randn(shape, generator=gen),
        "importance": 3 * torch.rand(B, H, T, generator=gen),
        "assoc_keys": torch.randn(shape, generator=gen),
    }
    return {name: t.requires_grad_() for name, t in tensors.items()}


def _outputs_and_gradients(memory: EvictionMemory, form, seed: int):
    """The form's keys, values and reads, and the gradient of a fixed random projection of
    them with respect to every input and parameter (zeros where none flows)."""
    x = _inputs(seed)
    evicted = evicted_mask(T, window=4, n_sink=1)
    inputs = ParallelInputs(x["q"], x["k"], x["v"], x["importance"], x["assoc_keys"], evicted)
    out = form(memory, x["h"], inputs)
    gen = torch.Generator().manual_seed(seed + 1)
    loss = sum((torch.randn(t.shape, generator=gen) * t).sum() for t in (out.keys, out.values, out.reads))
    leaves = [x[name] for name in INPUTS] + list(memory.parameters())
    wanted = [t for t in leaves if t.requires_grad]
    grads = dict.fromkeys(range(len(leaves)))
    if loss.requires_grad:
        found = torch.autograd.grad(loss, wanted, allow_unused=True)
        by_id = {id(t): g for t, g in zip(wanted, found, strict=True)}
        grads = {i: by_id.get(id(t)) for i, t in enumerate(leaves)}
    names = [*INPUTS, *(name for name, _ in memory.named_parameters())]
    grads = {
        name: torch.zeros_like(leaf) if grads[i] is None else grads[i]
        for i, (name, leaf) in enumerate(zip(names, leaves, strict=True))
    }
    return out, grads


@pytest.mark.parametrize("kind", MEMORY_KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_parallel_form_matches_the_naive_recurrence_in_outputs_and_every_gradient(kind, seed):
    memory = memory_for(kind, OPTIONS)
    naive, naive_grads = _outputs_and_gradients(memory, naive_recurrent, seed)
    fast, fast_grads = _outputs_and_gradients(memory, parallel, seed)
    for name in ("keys", "values", "reads"):
        torch.testing.assert_close(getattr(fast, name), getattr(naive, name), atol=1e-5, rtol=1e-4, msg=name)
    assert fast_grads.keys() == naive_grads.keys()
    for name, grad in naive_grads.items():
        torch.testing.assert_close(
            fast_grads[name], grad, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"d/d{n}: {m}"
        )


def test_the_reads_actually_depend_on_the_evicted_tokens():
    # guards the parity test against comparing two zeros: every reading memory reads something
    for kind in ("matrix", "matrix_ones", "matrix_delta", "association", "knn", "knn_unbounded"):
        out, grads = _outputs_and_gradients(memory_for(kind, OPTIONS), parallel, 0)
        assert out.reads[:, :, 5:].abs().amax() > 1e-2, kind
        assert grads["v"].abs().amax() > 1e-3, kind
    out, grads = _outputs_and_gradients(memory_for("projection", OPTIONS), parallel, 0)
    assert grads["log_rate"].abs() > 1e-4 and grads["h"].abs().amax() > 1e-4


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_model_gradients_of_the_parallel_form_equal_those_of_the_stream(kind):
    cfg = StreamingConfig(
        vocab_size=12,
        d_model=16,
        n_heads=2,
        window=4,
        n_sink=1,
        memory=kind,
        knn_capacity=3,
        projection_rate=0.05,
        projection_trainable=True,
    )
    torch.manual_seed(0)
    model = StreamingTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randint(0, 12, (2, 13), generator=torch.Generator().manual_seed(3))
    grads = {}
    for form in ("forward", "stream"):
        model.zero_grad()
        getattr(model, form)(tokens).log_softmax(-1)[..., 0].sum().backward()
        grads[form] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["forward"].keys() == grads["stream"].keys()
    for name, grad in grads["stream"].items():
        torch.testing.assert_close(grads["forward"][name], grad, atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_write_returns_a_new_state_and_leaves_the_old_one_as_it_was(kind):
    from engram.streaming import Evicted

    memory = memory_for(kind, OPTIONS)
    state = memory.init_state(1, H, D_HEAD, D_MODEL)
    before = {name: t.clone() for name, t in state.items()}
    gen = torch.Generator().manual_seed(0)
    ev = Evicted(
        0,
        1,
        torch.randn(1, H, D_HEAD, generator=gen),
        torch.randn(1, H, D_HEAD, generator=gen),
        torch.randn(1, D_MODEL, generator=gen),
        torch.rand(1, H, generator=gen),
        torch.randn(1, H, D_HEAD, generator=gen),
    )
    after = memory.write(state, ev)
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(state[name], tensor)


def test_an_unknown_kind_or_a_bounded_knn_without_capacity_is_refused_by_name():
    with pytest.raises(ValueError, match="memory"):
        memory_for("lstm")
    with pytest.raises(ValueError, match="capacity"):
        memory_for("knn", MemoryOptions(capacity=None))
    with pytest.raises(ValueError, match="top_k"):
        memory_for("knn_unbounded", MemoryOptions(top_k=0))
    with pytest.raises(ValueError, match="rate"):
        memory_for("projection", MemoryOptions(rate=-1.0))
