"""Batched per-sample gradients per influence module, from one forward and one backward pass per batch.

Every hooked module is an ``nn.Linear`` (PEFT's ``lora_A``/``lora_B`` ``default`` layers and the head's
``modules_to_save`` Linears). A forward hook keeps each call's input ``x`` and output ``y``; one
``torch.autograd.grad`` of the summed per-sample losses w.r.t. all the outputs gives ``∂ℓ/∂y``. Because the
loss is a sum over samples, sample ``i``'s rows of ``∂ℓ/∂y`` depend on sample ``i`` only, and its gradients are

    ∂ℓ_i/∂W = Σ_t (∂ℓ_i/∂y_it) ⊗ x_it        ∂ℓ_i/∂b = Σ_t ∂ℓ_i/∂y_it

(an einsum per module). A decoder's ``score`` head runs on every position and is pooled afterwards; the
other positions simply get zero output gradient. Padding positions (``attention_mask == 0``) are masked out
of both factors, so they contribute nothing whatever the padding side.

Word embeddings (WE) stay frozen: the embedding layer's output is swapped for a leaf tensor that requires
grad, its gradient ``(B, T, h)`` is taken in the same backward pass and scatter-added onto the (sorted,
unique) tokens of each sample — a row-sparse gradient; the vocab × h matrix is never formed.

The model runs in eval mode (LoRA dropout is the identity) and parameter ``.grad`` fields are left untouched.

Memory: out of device memory, a batch is retried from the same sample at half the size (``engine.memory``;
logged, kept for the rest of the split, LayerinfError at 1); with gradient checkpointing on, the checkpointed
layers recompute in the backward pass here too (the hooks record only the first forward). With a bf16 base
the LoRA and head gradients are float32 (PEFT runs LoRA in the adapters' dtype) and the word-embedding
gradients, which arrive in bf16, are summed over repeated tokens in float32.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from layerinf.engine.batching import EncodedSplit, model_inputs
from layerinf.engine.memory import free_memory, halve, is_oom
from layerinf.engine.objectives import CLASSIFICATION, Objective
from layerinf.errors import LayerinfError, raise_if_interrupted
from layerinf.model import eval_mode, inventory
from layerinf.spec import ModuleSpec
from layerinf.store.batch import GradBatch, WERows
from layerinf.store.gradstore import StoreWriter


def _unwrap(model) -> nn.Module:
    """Accept a ``LoadedModel`` as well as the (PEFT) model itself."""
    return model.model if hasattr(model, "tokenizer") and hasattr(model, "model") else model


def _dense_targets(model: nn.Module, specs: Sequence[ModuleSpec]) -> dict[str, list[ModuleSpec]]:
    """Module name → the specs (weight and/or bias) whose gradients come from that Linear's hook."""
    modules = dict(model.named_modules())
    targets: dict[str, list[ModuleSpec]] = {}
    for spec in specs:
        if spec.kind == "we":
            continue
        mod = modules.get(spec.module_name)
        if mod is None:
            raise LayerinfError(f"module {spec.module_name} (for {spec.name}) is not in the model",
                                "build the module specs with models.inventory() of this very model")
        if not isinstance(mod, nn.Linear):
            raise LayerinfError(
                f"{spec.name} lives in a {type(mod).__name__}; per-sample gradients support nn.Linear modules only",
                "restrict LoRA targets and the head to Linear layers",
            )
        if spec.attr not in ("weight", "bias") or tuple(getattr(mod, spec.attr).shape) != tuple(spec.shape):
            raise LayerinfError(f"{spec.name}: shape {spec.shape} does not match the model", "rebuild the specs")
        targets.setdefault(spec.module_name, []).append(spec)
    return targets


def row_sparse_rows(ids: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor, vocab: int) -> WERows:
    """Scatter ``grad`` (B, T, h) onto each sample's unique tokens (positions with ``mask`` False are skipped)."""
    b = ids.shape[0]
    valid = mask.bool()
    sample = torch.arange(b, device=ids.device).unsqueeze(1).expand_as(ids)[valid]
    keys = sample * vocab + ids[valid]
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    rows = torch.zeros(len(uniq), grad.shape[-1], dtype=grad.dtype, device=grad.device)
    rows.index_add_(0, inverse, grad[valid])
    counts = torch.bincount(torch.div(uniq, vocab, rounding_mode="floor"), minlength=b)
    indptr = torch.zeros(b + 1, dtype=torch.int64, device=ids.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return WERows(indptr, uniq % vocab, rows)


def _per_sample_linear(x: torch.Tensor, gy: torch.Tensor, mask: torch.Tensor | None, want_bias: bool):
    """Σ_t gy ⊗ x per sample (and Σ_t gy); x (B, …, in), gy (B, …, out)."""
    b = x.shape[0]
    if mask is not None and x.dim() == 3 and x.shape[1] == mask.shape[1]:
        keep = mask.unsqueeze(-1)
        x = torch.where(keep, x, 0)
        gy = torch.where(keep, gy, 0)
    x = x.reshape(b, -1, x.shape[-1])
    gy = gy.reshape(b, -1, gy.shape[-1])
    weight = torch.bmm(gy.transpose(1, 2), x)  # (B, out, in)
    bias = gy.sum(1) if want_bias else None
    return weight, bias


def _uses_last_token_head(model: nn.Module) -> bool:
    """Decoders: classifiers (HF ``…ForSequenceClassification`` with a ``score`` head, last-token pooling)
    and causal LMs (an ``lm_head``)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(getattr(inner, "score", None), nn.Module) or isinstance(getattr(inner, "lm_head", None),
                                                                             nn.Module)


def forward_inputs(model: nn.Module, batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Model inputs on ``device``; left-padded decoder batches also get ``position_ids`` counted from the first
    real token (as ``generate`` does), so every sample sees the positions it has unpadded — RoPE tables are
    float32, and shifted positions would otherwise change results at the 1e-7 level."""
    inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
    mask = inputs.get("attention_mask")
    if mask is not None and "position_ids" not in inputs and bool((mask[:, 0] == 0).any()) and _uses_last_token_head(model):
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_(min=0)
    return inputs


def _check_finite(grads: dict[str, torch.Tensor], we: WERows | None, rows: np.ndarray) -> None:
    parts = list(grads.values()) + ([we.rows] if we is not None else [])
    if not parts:
        return
    total = torch.stack([p.sum(dtype=torch.float64) if p.numel() else p.new_zeros((), dtype=torch.float64)
                         for p in parts]).sum()
    if torch.isfinite(total):
        return
    named = dict(grads, **({"WE": we.rows} if we is not None else {}))
    bad = [n for n, g in named.items() if not torch.isfinite(g).all()]
    raise LayerinfError(
        f"non-finite per-sample gradients in {', '.join(bad[:5])}{'…' if len(bad) > 5 else ''} "
        f"(batch with split rows {rows[:5].tolist()}…)",
        "the checkpoint or inputs are broken (NaN/inf weights or losses); retrain with a lower learning rate",
    )


def _batch_order(encoded: EncodedSplit, rows: np.ndarray | None, sort_by_length: bool) -> np.ndarray:
    order = np.arange(len(encoded), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if sort_by_length:
        order = order[np.argsort(encoded.lengths[order], kind="stable")]
    return order


@contextlib.contextmanager
def _checkpointing_in_eval(model: nn.Module):
    """Let gradient-checkpointed layers recompute in eval mode too.

    Hugging Face checkpoints a layer only while ``layer.training`` is set; collection runs in eval mode (no
    dropout). Only the checkpointed layers' own flags are set — their children (dropout, attention) stay in
    eval mode, and the layers use the flag for nothing else — and restored afterwards.
    """
    layers = [m for m in model.modules() if m is not model and getattr(m, "gradient_checkpointing", False) is True
              and _is_checkpoint_layer(m)]
    saved = [m.training for m in layers]
    for m in layers:
        m.training = True
    try:
        yield bool(layers)
    finally:
        for m, flag in zip(layers, saved):
            m.training = flag


def _is_checkpoint_layer(module: nn.Module) -> bool:
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # older transformers: the encoder/decoder stack holds the flag
        return True
    return isinstance(module, GradientCheckpointingLayer)


def collect_gradients(
    model,
    encoded: EncodedSplit,
    specs: Sequence[ModuleSpec] | None = None,
    *,
    batch_size: int = 32,
    include_we: bool = True,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    rows: np.ndarray | None = None,
    sort_by_length: bool = True,
    check_finite: bool = True,
    objective: Objective | None = None,
) -> Iterator[GradBatch]:
    """Yield per-sample gradients batch by batch (one forward + one backward each).

    ``specs`` defaults to ``models.inventory(model)``; WE is collected when ``include_we`` and a ``we`` spec is
    present. ``rows`` restricts to some split positions; ``sort_by_length`` batches similar lengths together
    (less padding; ``GradBatch.rows`` says which samples a batch holds). Gradients are returned in ``dtype``;
    word-embedding gradients are scattered in at least float32 (a bf16 base gives bf16 embedding outputs).

    Out of device memory, the batch is retried from the same sample at half the size (logged; see
    ``engine.memory``), and the smaller size is kept; per-sample results do not depend on the batching.
    ``objective`` (``engine.objectives``; default classification) defines each sample's loss, e.g. the
    response loss of instruction data. A model with gradient checkpointing on (``model.set_gradient_checkpointing``) recomputes its layers in
    the backward pass here too; the hooks record the first forward only.
    """
    model = _unwrap(model)
    objective = objective or CLASSIFICATION
    if specs is None:
        specs = inventory(model, include_we=include_we)
    we_spec = next((s for s in specs if s.kind == "we"), None) if include_we else None
    dense = [s for s in specs if s.kind != "we"]
    targets = _dense_targets(model, dense)
    modules = dict(model.named_modules())
    embedding = model.get_input_embeddings() if we_spec is not None else None
    vocab = int(embedding.weight.shape[0]) if embedding is not None else 0
    device = next(model.parameters()).device
    order = _batch_order(encoded, rows, sort_by_length)

    captured: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    we_out: list[torch.Tensor] = []
    recording = [False]  # off during the backward pass: checkpointed layers call the hooked modules again

    def linear_hook(name):
        def hook(_mod, args, output):
            if recording[0]:
                captured.setdefault(name, []).append((args[0].detach(), output))

        return hook

    def embedding_hook(_mod, _args, output):
        if not recording[0]:
            return None
        leaf = output.detach().requires_grad_(True)
        we_out.append(leaf)
        return leaf

    def one_batch(batch_rows: np.ndarray) -> GradBatch:
        batch = encoded.collate(batch_rows)
        inputs = forward_inputs(model, batch, device)
        labels = batch["labels"].to(device)
        mask = inputs.get("attention_mask")
        mask = mask.bool() if mask is not None else torch.ones_like(inputs["input_ids"], dtype=torch.bool)
        captured.clear()
        we_out.clear()
        recording[0] = True
        try:
            extra = {k: v.to(device) for k, v in objective.forward_kwargs(batch).items()}
            logits = model(**inputs, **extra).logits
        finally:
            recording[0] = False
        loss, summary = objective.loss_and_summary(logits, batch)
        outputs = [y for n in targets for _, y in captured.get(n, ())]
        missing = [n for n in targets if n not in captured]
        if missing:
            raise LayerinfError(f"module {missing[0]} was not called in the forward pass",
                                "collect gradients only for modules the model uses")
        if embedding is not None and len(we_out) != 1:
            raise LayerinfError(f"the input embedding was called {len(we_out)} times in one forward pass",
                                "collect without WE (include_we=False) for this model")
        out_grads = list(torch.autograd.grad(loss.sum(), outputs + we_out, allow_unused=True))
        grads: dict[str, torch.Tensor] = {}
        call = 0
        for name in targets:
            weight = bias = None
            want_bias = any(s.attr == "bias" for s in targets[name])
            for x, y in captured[name]:
                gy, out_grads[call] = out_grads[call], None  # free each output gradient once used
                call += 1
                if gy is None:
                    gy = torch.zeros_like(y)
                w, b_ = _per_sample_linear(x, gy.detach(), mask, want_bias)
                weight = w if weight is None else weight + w
                bias = b_ if bias is None or b_ is None else bias + b_
            for spec in targets[name]:
                g = weight if spec.attr == "weight" else bias
                grads[spec.name] = g.reshape(len(batch_rows), -1).to(dtype)
        we = None
        if embedding is not None:
            g_emb = out_grads[len(outputs)]
            if g_emb is None:
                g_emb = torch.zeros_like(we_out[0])
            g_emb = g_emb.detach()
            g_emb = g_emb.to(torch.promote_types(g_emb.dtype, torch.float32))  # bf16 base: sum repeats in fp32
            we = row_sparse_rows(inputs["input_ids"], mask, g_emb, vocab)
            we = WERows(we.indptr, we.tokens, we.rows.to(dtype))
        captured.clear()
        we_out.clear()
        del out_grads, outputs
        if check_finite:
            _check_finite(grads, we, batch_rows)
        return GradBatch(
            rows=batch_rows,
            grads={s.name: grads[s.name] for s in dense},
            we=we,
            loss=loss.detach(),
            logits=summary,
            labels=labels,
        )

    handles = [modules[name].register_forward_hook(linear_hook(name)) for name in targets]
    if embedding is not None:
        handles.append(embedding.register_forward_hook(embedding_hook))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="gradients", unit="sample", leave=False)
    try:
        with eval_mode(model), _checkpointing_in_eval(model), torch.enable_grad():
            start, size = 0, max(1, int(batch_size))
            while start < len(order):
                raise_if_interrupted()
                batch_rows = order[start : start + size]
                result = None
                try:
                    result = one_batch(batch_rows)
                except Exception as exc:  # noqa: BLE001 — only out-of-memory errors are handled
                    if not is_oom(exc):
                        raise
                if result is None:  # out of memory: drop what the failed pass held (outside the except)
                    captured.clear()
                    we_out.clear()
                    free_memory(device)
                    size = halve(min(size, len(batch_rows)), device)
                    continue
                yield result
                start += len(batch_rows)
                if bar is not None:
                    bar.update(len(batch_rows))
    finally:
        for h in handles:
            h.remove()
        captured.clear()
        we_out.clear()
        if bar is not None:
            bar.close()


@torch.no_grad()
def predictions(model, encoded: EncodedSplit, batch_size: int = 64, objective: Objective | None = None) -> np.ndarray:
    """Logits (n × C, float32) in split order, eval mode, no gradients (out of memory: smaller batches); with
    an ``objective``, its per-sample summary instead (SFT: response loss and greedy match)."""
    model = _unwrap(model)
    objective = objective or CLASSIFICATION
    device = next(model.parameters()).device
    order = _batch_order(encoded, None, True)
    out: np.ndarray | None = None
    with eval_mode(model):
        start, size = 0, max(1, int(batch_size))
        while start < len(order):
            rows = order[start : start + size]
            logits = None
            try:
                batch = encoded.collate(rows)
                extra = {k: v.to(device) for k, v in objective.forward_kwargs(batch).items()}
                out_logits = model(**forward_inputs(model, batch, device), **extra).logits
                logits = objective.summary(out_logits, batch).float().cpu().numpy()
                del out_logits
            except Exception as exc:  # noqa: BLE001 — only out-of-memory errors are handled
                if not is_oom(exc):
                    raise
            if logits is None:
                free_memory(device)
                size = halve(min(size, len(rows)), device)
                continue
            if out is None:
                out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
            out[rows] = logits
            start += len(rows)
    return out


# ------------------------------------------------------------------------------------ into a gradient store


def split_fingerprint(encoded: EncodedSplit) -> str:
    """sha256 of a split's token ids, masks and labels: a store is reusable only for the same data."""
    import hashlib

    h = hashlib.sha256()
    for key in ("input_ids", "attention_mask", "token_type_ids", "token_labels"):
        if key in encoded.features[0]:
            lengths = np.fromiter((len(f[key]) for f in encoded.features), dtype=np.int64, count=len(encoded))
            h.update(key.encode() + lengths.tobytes())
            h.update(np.fromiter(itertools.chain.from_iterable(f[key] for f in encoded.features), dtype=np.int64).tobytes())
    h.update(np.asarray(encoded.labels, dtype=np.int64).tobytes())
    h.update(f"{encoded.pad_token_id}/{encoded.padding_side}".encode())
    return h.hexdigest()


def we_token_counts(encoded: EncodedSplit, vocab: int) -> np.ndarray:
    """Number of distinct (unmasked) tokens per sample = its number of WE gradient rows."""
    lengths = encoded.lengths
    ids = np.fromiter(itertools.chain.from_iterable(f["input_ids"] for f in encoded.features), dtype=np.int64,
                      count=int(lengths.sum()))
    sample = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
    if "attention_mask" in encoded.features[0]:
        keep = np.fromiter(itertools.chain.from_iterable(f["attention_mask"] for f in encoded.features),
                           dtype=np.int64, count=len(ids)).astype(bool)
        ids, sample = ids[keep], sample[keep]
    uniq = np.unique(sample * vocab + ids)
    return np.bincount(uniq // vocab, minlength=len(encoded)).astype(np.int64)


def write_store(
    model,
    encoded: EncodedSplit,
    folder: str | os.PathLike,
    *,
    specs: Sequence[ModuleSpec] | None = None,
    batch_size: int = 32,
    include_we: bool = True,
    dtype: str = "float32",
    checkpoint_sha256: str = "",
    data_sha256: str | None = None,
    progress: bool = True,
    objective: Objective | None = None,
) -> "GradStore":
    """Collect a split's per-sample gradients and stream them into a new store at ``folder``.

    ``data_sha256`` defaults to ``split_fingerprint(encoded)``. An existing store there is replaced only once
    the new one is complete.
    """
    net = model.model if hasattr(model, "tokenizer") and hasattr(model, "model") else model
    if specs is None:
        specs = inventory(net, include_we=include_we)
    specs = [s for s in specs if include_we or s.kind != "we"]
    we_spec = next((s for s in specs if s.kind == "we"), None)
    counts = we_token_counts(encoded, int(we_spec.shape[0])) if we_spec is not None else None
    if data_sha256 is None:
        data_sha256 = split_fingerprint(encoded)
    with StoreWriter(folder, len(encoded), specs, dtype=dtype, we_counts=counts) as writer:
        for batch in collect_gradients(net, encoded, specs, batch_size=batch_size, include_we=we_spec is not None,
                                       progress=progress, objective=objective):
            writer.add(batch)
        return writer.finish(checkpoint_sha256=checkpoint_sha256, data_sha256=data_sha256)
