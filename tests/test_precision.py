"""Precision and device paths: a bf16 base against a batch-of-one loop and against fp32 influence scores, device
and precision errors, and the accelerator scoring path (chunk sizing, pinned double buffering) run on the CPU."""

import numpy as np
import pytest
import torch

from layerinf.config import ModelConfig
from layerinf.engine.train import _load_state
from layerinf.errors import LayerinfError
from layerinf.influence import _chunks, methods, registry
from layerinf.model import base_dtype, inventory, load_classifier, resolve_device, trainable_state
from grad_reference import gather, randomise_trainable, reference_loop, rel_err, synthetic_split


# ------------------------------------------------------------------------------------------------ bf16 base


def _pair(name, seed=0, scale=0.05):
    """The same trainable (fp32) tensors on an fp32 and on a bf16 base."""
    f32 = load_classifier(ModelConfig(name=name), 3, seed=seed)
    randomise_trainable(f32.model, scale=scale)
    bf16 = load_classifier(ModelConfig(name=name, precision="bf16"), 3, seed=seed)
    _load_state(bf16.model, trainable_state(f32.model))
    return f32, bf16


@pytest.mark.parametrize("name, side", [("shape:tiny-bert", "right"), ("shape:tiny-llama", "left")])
def test_bf16_base_per_sample_gradients_match_a_bf16_batch_of_one_loop(name, side):
    """Both sides run the same bf16 base with fp32 LoRA/head. They cannot agree to fp32 rounding: a batch of 4 and
    a batch of one round the bf16 activations differently (other GEMM blockings), and each such difference is
    as large as bf16 itself. So: batched vs loop within 1e-2 (bf16 ε = 7.8e-3), and batching adds no error to
    what the bf16 base costs against the fp32 model (measured: ≤ 0.6 × that cost per module, 5e-3 at most)."""
    f32, bf16 = _pair(name)
    encoded = synthetic_split([3, 11, 5, 16, 1, 8, 2], side, token_high=2000)
    specs = inventory(bf16.model)
    loop16 = reference_loop(bf16.model, encoded, specs)
    loop32 = reference_loop(f32.model, encoded, specs)
    dense, we, loss, logits = gather(bf16.model, encoded, specs, batch_size=4)
    assert all(g.dtype == torch.float32 for g in dense.values()) and loss.dtype == torch.float32
    batch_err = {k: rel_err(dense[k], loop16[0][k]) for k in dense}
    bf16_cost = {k: rel_err(loop16[0][k], loop32[0][k]) for k in dense}
    assert max(batch_err.values()) < 1e-2, batch_err
    truth_err = np.mean([rel_err(dense[k], loop32[0][k]) for k in dense])
    assert truth_err < 1.25 * np.mean(list(bf16_cost.values())), (truth_err, bf16_cost)
    assert rel_err(loss, loop16[2]) < 1e-3 and rel_err(logits, loop16[3]) < 1e-3
    for (tokens, rows), (ref_tokens, ref_rows) in zip(we, loop16[1]):
        assert torch.equal(tokens, ref_tokens) and rows.dtype == torch.float32
    assert rel_err(torch.cat([r for _, r in we]), torch.cat([r for _, r in loop16[1]]).float()) < 1e-2


@pytest.mark.slow
def test_minilm_bf16_influence_scores_rank_like_fp32():
    """TracIn per module from collected gradients, MiniLM, 48 train / 16 validation demo texts, max_length 32:
    Spearman ≥ 0.999 between the bf16-base and fp32 score matrices, for every module (measured: ≥ 0.9992)."""
    import pandas as pd
    from scipy.stats import spearmanr

    from layerinf.data.demo import demo_rows
    from layerinf.engine.batching import encode_split
    from layerinf.influence.we import WEGrads, tracin_we

    rows = demo_rows()

    def frame(part, k):
        rs = [r for r in rows if r["split"] == part][:k]
        return pd.DataFrame({"idx": range(k), "text": [r["text"] for r in rs], "text_pair": [None] * k,
                             "label": [int(r["label"] == "positive") for r in rs]})

    f32 = load_classifier(ModelConfig(name="minilm"), 2, seed=0)
    randomise_trainable(f32.model, scale=0.02)
    bf16 = load_classifier(ModelConfig(name="minilm", precision="bf16"), 2, seed=0)
    _load_state(bf16.model, trainable_state(f32.model))
    train = encode_split(frame("train", 48), f32.tokenizer, 32)
    infl = encode_split(frame("dev", 16), f32.tokenizer, 32)
    specs = inventory(f32.model)

    def scores(model):
        G, Gwe, _, _ = gather(model, train, specs, batch_size=16)
        V, Vwe, _, _ = gather(model, infl, specs, batch_size=16)
        out = {name: methods.score_tracin(V[name].numpy(), G[name].numpy()) for name in G}

        def we(parts):
            indptr = np.cumsum([0] + [len(t) for t, _ in parts])
            return WEGrads(indptr, np.concatenate([t.numpy() for t, _ in parts]),
                           np.concatenate([r.numpy() for _, r in parts]))

        out["WE"] = np.asarray(tracin_we(we(Vwe), [we(Gwe)], len(train)))
        return out

    s32, s16 = scores(f32.model), scores(bf16.model)
    rho = {name: spearmanr(s32[name].ravel(), s16[name].ravel())[0] for name in s32}
    assert len(rho) == len(specs)
    worst = min(rho, key=rho.get)
    assert rho[worst] >= 0.999, (worst, rho[worst])
    total32, total16 = sum(s32.values()), sum(s16.values())
    assert spearmanr(total32.ravel(), total16.ravel())[0] >= 0.999


# ------------------------------------------------------------------------------------------------ errors


def test_device_and_precision_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(LayerinfError, match="use --device cpu"):
            resolve_device(name)
        with pytest.raises(LayerinfError, match="use --device cpu"):
            load_classifier(ModelConfig(name="shape:tiny-bert"), 2, device=name)
    with pytest.raises(LayerinfError, match=r"fp16 is not supported on CPU .* — use --precision bf16 or fp32"):
        base_dtype("fp16", "cpu")
    for junk in ("fp8", "int8", "float32", ""):
        with pytest.raises(LayerinfError, match=f"unknown precision '{junk}' — use one of fp32, bf16, fp16"):
            base_dtype(junk, "cpu")
    with pytest.raises(LayerinfError, match="precision"):
        ModelConfig(name="shape:tiny-bert", precision="fp8")
    with pytest.raises(LayerinfError, match="unsupported compute dtype 'float16'"):
        methods.score_tracin(np.ones((2, 3)), np.ones((4, 3)), compute_dtype="float16")


# ------------------------------------------------------------------------------------------------ device scoring


def test_device_chunk_rows_from_free_memory():
    gib = 1 << 30
    # float32 staging, float32 GEMM: 2 × 4 bytes per value; half of (free − resident)
    assert _chunks.device_chunk_rows(1024, free_bytes=gib) == (gib // 2) // (8 * 1024) // 64 * 64 == 65536
    assert _chunks.device_chunk_rows(16384, free_bytes=gib) == 4096
    # a bf16 GEMM copy (+2 bytes) and the resident output shrink it
    assert _chunks.device_chunk_rows(16384, free_bytes=gib, mm_bytes=2) == 3264
    assert _chunks.device_chunk_rows(16384, free_bytes=gib, resident_bytes=gib // 2) == 2048
    # the pinned host buffers are capped (1 GiB each), and so is the row count
    assert _chunks.device_chunk_rows(1 << 20, free_bytes=1 << 40) == 256
    assert _chunks.device_chunk_rows(8, free_bytes=1 << 40) == _chunks.MAX_DEVICE_ROWS
    # never more rows than there are, never fewer than one, multiples of 64 above 64
    assert _chunks.device_chunk_rows(1024, free_bytes=gib, n=1000) == 960
    assert _chunks.device_chunk_rows(1024, free_bytes=gib, n=50) == 50
    assert _chunks.device_chunk_rows(1024, free_bytes=0) == 1
    assert _chunks.device_chunk_rows(1024, free_bytes=gib, resident_bytes=2 * gib) == 1
    dev = torch.device("cpu")  # elsewhere than CUDA: a fixed size, or the one asked for
    assert _chunks.device_rows_for(dev, 64, 4, 10_000, torch.float32, torch.float32) == 4096
    assert _chunks.device_rows_for(dev, 64, 4, 100, torch.float32, torch.float32) == 100
    assert _chunks.device_rows_for(dev, 64, 4, None, torch.float32, torch.float32, requested=7) == 7


def test_device_chunks_recut_any_source_into_full_buffers(tmp_path):
    rng = np.random.default_rng(0)
    G = rng.standard_normal((103, 6)).astype(np.float32)
    np.save(tmp_path / "g.npy", G)
    mm = np.load(tmp_path / "g.npy", mmap_mode="r")  # read-only memmap chunks go straight into the buffers
    sources = {"memmap": [mm[i : i + 17] for i in range(0, 103, 17)],
               "tensors": [torch.from_numpy(G[i : i + 40]) for i in range(0, 103, 40)],
               "one row at a time": [G[i] for i in range(103)]}
    for label, chunks in sources.items():
        stream = _chunks.DeviceChunks(_chunks._chunk_passes(chunks, 4096, raw=True), 6, 25, torch.device("cpu"))
        for _ in range(2):  # every call is a fresh pass over the same buffers
            got = [c.clone() for c in stream()]
            assert [len(c) for c in got] == [25, 25, 25, 25, 3], label
            assert torch.equal(torch.cat(got), torch.from_numpy(G)), label
        assert stream.rows_shipped == 2 * 103 and stream.chunks_shipped == 10
        assert len(stream.host) == 2 and all(not h.is_pinned() for h in stream.host)  # pinned on CUDA only
    views = list(_chunks.DeviceChunks(lambda: iter([G]), 6, 50, torch.device("cpu"))())
    assert views[0].data_ptr() == views[2].data_ptr() != views[1].data_ptr()  # two buffers, alternating
    with pytest.raises(LayerinfError, match=r"expected \(rows, 6\)"):
        list(_chunks.DeviceChunks(lambda: iter([np.ones((3, 5))]), 6, 4, torch.device("cpu"))())


@pytest.fixture
def staged_on_cpu(monkeypatch):
    """Route ``device="staged-cpu"`` through the accelerator path (V moved, DeviceChunks, device output) on the CPU."""
    real = _chunks.score_device

    def fake(device):
        return torch.device("cpu") if device == "staged-cpu" else real(device)

    monkeypatch.setattr(methods, "score_device", fake)
    return "staged-cpu"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accelerator_path_gives_the_cpu_results(staged_on_cpu, dtype):
    rng = np.random.default_rng(1)
    V = rng.standard_normal((9, 40)).astype(dtype)
    G = rng.standard_normal((230, 40)).astype(dtype)
    G[17] = 0.0  # the zero rule of cosine still applies
    chunks = [G[i : i + 64] for i in range(0, 230, 64)]
    for compute in (None, torch.bfloat16, "tf32", "float64"):
        exact = compute == "float64" or (compute is None and dtype == np.float64)  # float64 arithmetic
        tol = dict(rtol=1e-12, atol=1e-12) if exact else dict(rtol=1e-5, atol=1e-5)
        for method, kwargs in (("tracin", {}), ("cosine", {}), ("datainf", {}), ("datainf", {"form": "gram"})):
            want = registry.score_module(method, V, chunks, n=230, compute_dtype=compute, **kwargs)
            got = registry.score_module(method, V, lambda: iter(chunks), n=230, compute_dtype=compute,
                                       device=staged_on_cpu, device_chunk_rows=50, **kwargs)
            assert got.shape == (9, 230) and got.dtype == want.dtype
            if compute == torch.bfloat16:  # bf16 rounding of other GEMM shapes
                np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * np.abs(want).max())
            else:
                np.testing.assert_allclose(got, want, **tol)
        concat = methods.score_concat("cosine", [V, V[:, :7]], [chunks, [c[:, :7] for c in chunks]], n=230,
                                      compute_dtype=compute)
        staged = methods.score_concat("cosine", [V, V[:, :7]], [chunks, [c[:, :7] for c in chunks]], n=230,
                                      compute_dtype=compute, device=staged_on_cpu, device_chunk_rows=33)
        np.testing.assert_allclose(staged, concat, **(tol if compute != torch.bfloat16 else dict(rtol=2e-2, atol=2e-2)))


def test_cpu_scoring_is_unchanged_bit_for_bit():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((5, 33)).astype(np.float32)
    G = rng.standard_normal((70, 33)).astype(np.float32)
    for method in ("tracin", "cosine", "datainf"):
        base = registry.score_module(method, V, G, chunk_rows=16)
        for device in ("cpu", torch.device("cpu"), None):
            assert np.array_equal(registry.score_module(method, V, G, chunk_rows=16, device=device), base)
        # "tf32" means float32 off CUDA; names work like torch dtypes
        assert np.array_equal(registry.score_module(method, V, G, chunk_rows=16, compute_dtype="tf32"), base)
        assert np.array_equal(registry.score_module(method, V, G, chunk_rows=16, compute_dtype="float32"), base)
        assert np.array_equal(registry.score_module(method, V, G, chunk_rows=16, compute_dtype="bfloat16"),
                              registry.score_module(method, V, G, chunk_rows=16, compute_dtype=torch.bfloat16))
    assert _chunks.resolve_compute("tf32") == (torch.float32, True)
    assert _chunks.resolve_compute(torch.bfloat16) == (torch.bfloat16, False)
    assert _chunks.score_device("cpu") is None and _chunks.score_device(None) is None


def test_scoring_device_names(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _chunks.score_device("auto") is None and _chunks.score_device(" CPU ") is None
    with pytest.raises(LayerinfError, match="no CUDA GPU is available .* — use --device cpu"):
        methods.score_tracin(np.ones((2, 3)), np.ones((4, 3)), device="cuda")
    with pytest.raises(LayerinfError, match="unknown device 'gpu'"):
        methods.score_tracin(np.ones((2, 3)), np.ones((4, 3)), device="gpu")
