"""Out-of-memory back-off (collection, the gradient store, training by gradient accumulation, evaluation) and
gradient checkpointing, on tiny random models with an injected ``torch.cuda.OutOfMemoryError``."""

import logging

import numpy as np
import pytest
import torch

from layerinf.config import ModelConfig, TrainConfig
from layerinf.engine.collect import collect_gradients, predictions, write_store
from layerinf.engine.memory import OOM_FIX, OOM_PROBLEM, device_label, halve, is_oom
from layerinf.engine.train import fit
from layerinf.errors import LayerinfError
from layerinf.model import attach_lora, inventory, set_gradient_checkpointing, trainable_state
from grad_reference import assert_matches_loop, gather, reference_loop, synthetic_split, tiny_classifier

LENGTHS = [3, 11, 5, 16, 1, 8, 2, 9, 4, 12, 6]


class InjectOOM:
    """Raise an out-of-memory error from the model's forward (its input embedding) when the batch has more than
    ``limit`` rows: once (``times=1``) or every time (``times=None``)."""

    def __init__(self, model, limit, times=1, error=None):
        self.limit, self.times, self.raised, self.sizes = limit, times, 0, []
        self.error = error or (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        self.handle = model.get_input_embeddings().register_forward_pre_hook(self)

    def __call__(self, _module, args):
        size = args[0].shape[0]
        self.sizes.append(size)
        if size > self.limit and (self.times is None or self.raised < self.times):
            self.raised += 1
            raise self.error()

    def remove(self):
        self.handle.remove()


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "layerinf" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------------ helpers


def test_is_oom_and_halving(caplog):
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA error: out of memory")) and is_oom(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("out of memory"))
    assert device_label("cpu") == "cpu" and device_label(torch.device("cuda", 1)) == "cuda:1"
    with caplog.at_level(logging.WARNING, logger="layerinf"):
        assert halve(32, "cpu") == 16 and halve(3, "cpu") == 1
    assert _messages(caplog) == ["out of memory at batch size 32 on cpu: retrying with 16",
                                 "out of memory at batch size 3 on cpu: retrying with 1"]
    with pytest.raises(LayerinfError) as err:
        halve(1, "cpu")
    assert str(err.value) == f"{OOM_PROBLEM} — {OOM_FIX}"
    assert str(err.value) == ("out of memory even at batch size 1 — use --precision bf16, gradient checkpointing, "
                              "or a smaller --max-length")


# ------------------------------------------------------------------------------------------------ collection


@pytest.mark.parametrize("arch, side", [("bert", "right"), ("llama", "left")])
def test_collection_backs_off_and_gives_the_same_per_sample_gradients(arch, side, caplog):
    model = tiny_classifier(arch)
    encoded = synthetic_split(LENGTHS, side)
    specs = inventory(model)
    clean = gather(model, encoded, specs, batch_size=8, dtype=torch.float64)
    inject = InjectOOM(model, limit=5)
    try:
        with caplog.at_level(logging.WARNING, logger="layerinf"):
            got = gather(model, encoded, specs, batch_size=8, dtype=torch.float64)
    finally:
        inject.remove()
    assert inject.raised == 1 and inject.sizes[:2] == [8, 4] and max(inject.sizes[1:]) == 4
    assert _messages(caplog) == ["out of memory at batch size 8 on cpu: retrying with 4"]
    for name in clean[0]:
        torch.testing.assert_close(got[0][name], clean[0][name], rtol=1e-12, atol=1e-15)
    for (t1, r1), (t2, r2) in zip(got[1], clean[1]):
        assert torch.equal(t1, t2)
        torch.testing.assert_close(r1, r2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got[2], clean[2], rtol=1e-12, atol=1e-15)
    assert not any(m._forward_hooks for m in model.modules())


def test_collection_halves_repeatedly_then_gives_up(caplog):
    model = tiny_classifier("bert")
    encoded = synthetic_split(LENGTHS, "right")
    inject = InjectOOM(model, limit=1, times=None, error=lambda: RuntimeError("CUDA error: out of memory"))
    try:
        with caplog.at_level(logging.WARNING, logger="layerinf"):
            batches = list(collect_gradients(model, encoded, batch_size=8, progress=False))
        assert sorted(np.concatenate([b.rows for b in batches]).tolist()) == list(range(len(LENGTHS)))
        assert all(len(b) == 1 for b in batches)
        assert _messages(caplog) == [f"out of memory at batch size {a} on cpu: retrying with {b}"
                                     for a, b in ((8, 4), (4, 2), (2, 1))]
        inject.limit = 0  # nothing fits
        with pytest.raises(LayerinfError, match="out of memory even at batch size 1 — use --precision bf16"):
            list(collect_gradients(model, encoded, batch_size=4, progress=False))
    finally:
        inject.remove()
    assert not any(m._forward_hooks for m in model.modules()) and not any(m._forward_pre_hooks for m in model.modules())


def test_other_errors_are_not_swallowed():
    model = tiny_classifier("bert")
    inject = InjectOOM(model, limit=0, times=None,
                       error=lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    try:
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            list(collect_gradients(model, synthetic_split([3, 4], "right"), progress=False))
    finally:
        inject.remove()


def test_store_and_predictions_back_off(tmp_path, caplog):
    model = tiny_classifier("llama").float()
    encoded = synthetic_split(LENGTHS, "left", seed=3)
    clean = write_store(model, encoded, tmp_path / "clean", batch_size=8, progress=False)
    logits = predictions(model, encoded, batch_size=8)
    inject = InjectOOM(model, limit=3, times=None)
    try:
        with caplog.at_level(logging.WARNING, logger="layerinf"):
            store = write_store(model, encoded, tmp_path / "oom", batch_size=8, progress=False)
            logits_oom = predictions(model, encoded, batch_size=8)
    finally:
        inject.remove()
    assert _messages(caplog).count("out of memory at batch size 8 on cpu: retrying with 4") == 2
    for name in clean.dense_modules:
        np.testing.assert_allclose(store.module(name), clean.module(name), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(store.we_all().tokens, clean.we_all().tokens)
    np.testing.assert_allclose(store.we_all().rows, clean.we_all().rows, rtol=1e-5, atol=1e-5)  # |rows| ≤ ~10
    np.testing.assert_allclose(store.loss, clean.loss, rtol=1e-5)
    np.testing.assert_allclose(logits_oom, logits, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ training


def _tiny_trainable(seed=0):
    """A tiny BERT classifier without any dropout (base or LoRA): runs that batch differently stay comparable."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return attach_lora(model, ModelConfig(lora_dropout=0.0), seed=seed)


def _fit(model, encoded, **kwargs):
    recipe = TrainConfig(epochs=2, batch_size=8)
    return fit(model, encoded, encoded, encoded, recipe, lr=1e-2, seed=0, progress=False, eval_batch_size=8, **kwargs)


def test_training_accumulates_micro_batches_after_oom(caplog):
    encoded = synthetic_split(LENGTHS * 2, "right", seed=5)  # 22 samples: batches of 8, 8, 6
    clean = _fit(_tiny_trainable(), encoded)
    model = _tiny_trainable()
    inject = InjectOOM(model, limit=3, times=None)
    try:
        with caplog.at_level(logging.WARNING, logger="layerinf"):
            res = _fit(model, encoded)
    finally:
        inject.remove()
    msgs = _messages(caplog)
    assert msgs[0] == ("out of memory at batch size 8 on cpu: retrying with 4 "
                       "(gradients of micro-batches accumulated over the batch of 8)")
    assert msgs[1].startswith("out of memory at batch size 4 on cpu: retrying with 2")
    assert inject.sizes[:3] == [8, 4, 2] and set(inject.sizes[3:5]) == {2}  # the first step, then micro-batches of 2
    # same steps and schedule; the same optimisation up to float rounding
    np.testing.assert_array_equal(res.history["lr"], clean.history["lr"])
    np.testing.assert_array_equal(res.history["epoch"], clean.history["epoch"])
    for col in ("train_loss", "infl_loss", "infl_acc", "test_loss"):
        np.testing.assert_allclose(res.history[col], clean.history[col], rtol=1e-5, atol=1e-6)
    assert res.best_epoch == clean.best_epoch
    for k, v in clean.last_state.items():
        torch.testing.assert_close(res.last_state[k], v, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(clean.init_state[k], v) for k, v in clean.last_state.items())


def test_training_gives_up_at_batch_size_one():
    model = _tiny_trainable()
    inject = InjectOOM(model, limit=0, times=None)
    try:
        with pytest.raises(LayerinfError, match="out of memory even at batch size 1"):
            _fit(model, synthetic_split([3, 4, 5], "right"))
    finally:
        inject.remove()


def test_training_without_oom_is_the_plain_step():
    """No injection: the step is forward, mean loss, backward, AdamW — compare with a hand-written loop."""
    import torch.nn.functional as F

    from layerinf.engine.batching import model_inputs
    from layerinf.engine.train import cosine_with_warmup

    encoded = synthetic_split(LENGTHS, "right", seed=2)
    res = fit(_tiny_trainable(), encoded, encoded, encoded, TrainConfig(epochs=1, batch_size=4), lr=1e-2, seed=0,
              progress=False)
    model = _tiny_trainable()
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    sched = cosine_with_warmup(opt, encoded.num_batches(4), 0.1)
    model.train()
    for batch in encoded.batches(4, shuffle=True, generator=rng):
        loss = F.cross_entropy(model(**model_inputs(batch)).logits.float(), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    want = trainable_state(model)
    assert all(torch.equal(res.last_state[k], want[k]) for k in want)  # bitwise


# ------------------------------------------------------------------------------------------------ checkpointing


def _count_calls(module):
    calls = [0]
    handle = module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls, handle


@pytest.mark.parametrize("arch, side", [("bert", "right"), ("llama", "left")])
def test_gradient_checkpointing_keeps_per_sample_gradients(arch, side):
    model = tiny_classifier(arch)
    encoded = synthetic_split([3, 11, 5, 16, 1, 8, 2], side)
    specs = inventory(model)
    ref = reference_loop(model, encoded, specs)
    set_gradient_checkpointing(model, True)
    inner = model.get_base_model()
    assert inner.is_gradient_checkpointing
    mlp = next(m for n, m in inner.named_modules() if n.endswith(("intermediate.dense", "mlp.up_proj")))
    calls, handle = _count_calls(mlp)
    try:
        assert_matches_loop(model, encoded, specs, ref, 1e-10, batch_size=4, dtype=torch.float64)
    finally:
        handle.remove()
    assert calls[0] == 2 * 2  # 2 batches, each layer run again in the backward pass: checkpointing is on
    assert not model.training and not any(m.training for m in model.modules())  # eval mode restored
    set_gradient_checkpointing(model, False)
    assert not inner.is_gradient_checkpointing


def test_gradient_checkpointing_in_training_changes_nothing():
    """Non-reentrant checkpointing replays the RNG: even with dropout the run is the same, bit for bit."""
    from transformers import BertConfig, BertForSequenceClassification

    def build():
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, num_labels=3))  # dropout 0.1 everywhere, LoRA dropout 0.05
        return attach_lora(model, ModelConfig(), seed=0)

    encoded = synthetic_split(LENGTHS, "right", seed=7)
    plain = _fit(build(), encoded)
    model = build()
    mlp = next(m for n, m in model.named_modules() if n.endswith("intermediate.dense"))
    calls, handle = _count_calls(mlp)
    try:
        ckpt = _fit(model, encoded, gradient_checkpointing=True)
    finally:
        handle.remove()
    assert model.get_base_model().is_gradient_checkpointing
    n_train_batches = 2 * 2  # 2 epochs × 2 batches of 8 of 11 samples
    n_eval_batches = 2 * 2  # 2 epochs × 2 batches: infl and test are the same split here, evaluated once
    assert calls[0] == 2 * n_train_batches + n_eval_batches
    pd_equal = all(np.array_equal(plain.history[c], ckpt.history[c]) for c in plain.history.columns)
    assert pd_equal, (plain.history, ckpt.history)
    assert all(torch.equal(plain.last_state[k], ckpt.last_state[k]) for k in plain.last_state)


@pytest.mark.parametrize("name, side", [("shape:tiny-bert", "right"), ("shape:tiny-llama", "left")])
def test_load_classifier_gradient_checkpointing_on_a_shape_model(name, side):
    from layerinf.model import load_classifier
    from grad_reference import randomise_trainable

    lm = load_classifier(ModelConfig(name=name), 3, seed=0, gradient_checkpointing=True)  # 3 labels
    inner = lm.model.get_base_model()
    assert inner.is_gradient_checkpointing
    layers = [m for m in inner.modules() if type(m).__name__ in ("BertLayer", "LlamaDecoderLayer")]
    assert len(layers) == 2 and all(m.gradient_checkpointing for m in layers)
    if lm.source.is_decoder:
        assert inner.config.use_cache is False
    assert not load_classifier(ModelConfig(name=name), 2, seed=0).model.get_base_model().is_gradient_checkpointing
    randomise_trainable(lm.model, scale=0.05)
    encoded = synthetic_split([3, 11, 5, 16, 1, 8, 2], side, token_high=2000)
    specs = inventory(lm.model)
    ref = reference_loop(lm.model, encoded, specs)  # the loop runs in eval mode: no checkpointing there
    assert_matches_loop(lm.model, encoded, specs, ref, 1e-5, batch_size=4)
