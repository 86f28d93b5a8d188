"""Tokenise an SFT split (prompt + response) into an ``EncodedSplit`` whose loss covers the response only.

Each row's features are ``input_ids`` (prompt ids then response ids), ``attention_mask`` (all 1) and
``token_labels``: ``IGNORE_INDEX`` (-100) on every prompt token and the token's own id on every response
token. The labels are NOT shifted: ``token_labels[t]`` is the id of token ``t``, so the loss takes the logits
at position ``t − 1`` to predict it (``logits[:, :-1]`` against ``token_labels[:, 1:]``). Padded positions
carry -100 too (``EncodedSplit.collate`` pads ``token_labels`` with ``IGNORE_INDEX``).

Prompt and response ids:

* with a chat template (``chat_template="auto"`` when the tokenizer has one, ``"on"`` to require it): the
  prompt is ``apply_chat_template(messages, add_generation_prompt=True)`` and the response is what
  ``apply_chat_template(messages + [assistant reply])`` adds after it, up to and including the end-of-turn
  token (EOS; SmolLM2: ``positive<|im_end|>``): what a template puts after it (a newline) is never generated,
  so it is not trained on and not part of "greedy decoding reproduces the response". If the full conversation does not start with the prompt's ids (a template that rewrites earlier
  turns), the response is the reply's text tokenised alone, plus EOS, after the prompt's ids.
* plain (``"off"``, or ``"auto"`` without a template): the tokenizer's leading special tokens (BOS, or
  [CLS] for BERT-style tokenizers), then ``prompt + "\\n"`` (a multi-turn prompt: its turns' contents joined
  by blank lines); the response is the reply's text and EOS (the
  [SEP] token when there is no EOS). The two parts are tokenised separately, so a merge across the boundary
  cannot hide where the response starts.

Caps apply separately: a prompt longer than ``max_prompt_length`` is cut from the LEFT (its end, nearest the
response, stays; a leading BOS/[CLS] is kept), a response longer than ``max_response_length`` from the RIGHT.
A response whose text tokenises to nothing is an error that names the row.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from layerinf.engine.batching import IGNORE_INDEX, EncodedSplit
from layerinf.errors import LayerinfError

CHAT_TEMPLATE_MODES = ("auto", "on", "off")


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise LayerinfError(f"{name}={value!r} is not a whole number ≥ 1", f"give {name} as a token count, e.g. 128")
    return int(value)


def chat_template_arg(value: Any) -> str:
    """``"auto"``, ``"on"`` or ``"off"`` (``True``/``False`` are read as on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if not isinstance(value, str) or value.strip().lower() not in CHAT_TEMPLATE_MODES:
        raise LayerinfError(f"chat_template={value!r} is not one of {', '.join(CHAT_TEMPLATE_MODES)}",
                            "use 'auto' (the tokenizer's template when it has one), 'on' or 'off'")
    return value.strip().lower()


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _model_name(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def uses_chat_template(tokenizer, chat_template: str = "auto") -> bool:
    """Whether ``encode_sft`` formats with the tokenizer's chat template (``"on"`` without one is an error)."""
    mode = chat_template_arg(chat_template)
    if mode == "on" and not has_chat_template(tokenizer):
        raise LayerinfError(f"the tokenizer of {_model_name(tokenizer)} has no chat template",
                            "use --chat-template off (plain 'prompt\\nresponse' text), or a chat model")
    return mode == "on" or (mode == "auto" and has_chat_template(tokenizer))


def _ids(out: Any) -> list[int]:
    """Token ids from ``apply_chat_template``/a tokenizer call (a list, or a dict-like with ``input_ids``)."""
    if hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):  # a batch of one
        out = out[0]
    return [int(i) for i in out]


def _lead_specials(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (BOS, [CLS], or none)."""
    bare = _ids(tokenizer("a", add_special_tokens=False))
    full = _ids(tokenizer("a", add_special_tokens=True))
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []


def _end_id(tokenizer) -> int | None:
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (int, np.integer)):
            return int(value)
    return None


def _where(df: pd.DataFrame, i: int) -> str:
    idx = int(df["idx"].iloc[i]) if "idx" in df.columns else i
    src = f" (source row {int(df['source_idx'].iloc[i])})" if "source_idx" in df.columns else ""
    return f"row {idx}{src}"


def _messages(df: pd.DataFrame, i: int) -> list[dict]:
    if "messages" not in df.columns:
        return [{"role": "user", "content": str(df["prompt"].iloc[i])}]
    cell = df["messages"].iloc[i]
    try:
        turns = json.loads(cell) if isinstance(cell, str) else list(cell)
    except (TypeError, ValueError):
        turns = None
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise LayerinfError(f"{_where(df, i)} has no valid messages (a JSON list of {{role, content}} turns)",
                            "prepare the data with layerinf.data.sft")
    return turns


def plain_prompt(turns: list[dict]) -> str:
    """The prompt text without a template: the turns' contents joined by blank lines (one turn: its text)."""
    return "\n\n".join(str(t.get("content", "")) for t in turns)


def _cut_prompt(ids: list[int], cap: int, keep_first: set[int]) -> list[int]:
    if len(ids) <= cap:
        return ids
    keep = 1 if cap > 1 and ids[0] in keep_first else 0
    return ids[:keep] + ids[len(ids) - (cap - keep):]


def _template_pair(tokenizer, turns: list[dict], response: str, end: int | None, reply: list[int],
                   where: str) -> tuple[list[int], list[int], bool]:
    """(prompt ids, response ids, whether the full conversation extended the prompt's ids)."""
    try:
        prompt = _ids(tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True,
                                                    return_dict=False))
        full = _ids(tokenizer.apply_chat_template(turns + [{"role": "assistant", "content": response}],
                                                  tokenize=True, return_dict=False))
    except Exception as exc:  # noqa: BLE001 - a template's own error (roles, alternation) becomes one line
        msg = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LayerinfError(f"the chat template of {_model_name(tokenizer)} fails on {where}: {msg}",
                            "fix that conversation, or use --chat-template off") from None
    if len(full) > len(prompt) and full[: len(prompt)] == prompt:
        reply_ids = full[len(prompt):]
        if end is not None and end in reply_ids[1:]:  # the turn ends at the end token: what the template puts
            last = len(reply_ids) - 1 - reply_ids[::-1].index(end)  # after it ("\n") is never generated
            reply_ids = reply_ids[: last + 1]
        return prompt, reply_ids, True
    return prompt, reply + ([end] if end is not None else []), False


def encode_sft(
    df: pd.DataFrame,
    tokenizer,
    *,
    max_prompt_length: int = 256,
    max_response_length: int = 128,
    chat_template: str = "auto",
    class_words: Sequence[str] | None = None,
) -> EncodedSplit:
    """Tokenise an SFT split (columns ``messages``/``prompt``, ``response``, ``idx``) for response-only loss.

    ``labels`` of the result: the class index of each ``response`` in ``class_words`` (classification as
    generation; the noisy response in train) or zeros without ``class_words``. ``padding_side`` is the
    tokenizer's. ``info`` about the encoding (template used, fallbacks, truncations) is not returned; see
    ``sft_encoding_stats`` for it.
    """
    return _encode(df, tokenizer, max_prompt_length, max_response_length, chat_template, class_words)[0]


def sft_encoding_stats(df: pd.DataFrame, tokenizer, **options) -> dict[str, Any]:
    """``encode_sft``'s bookkeeping: ``chat_template`` (bool), ``fallback_rows`` (template prefix mismatches),
    ``prompt_truncated`` and ``response_truncated`` (row counts)."""
    return _encode(df, tokenizer, options.get("max_prompt_length", 256), options.get("max_response_length", 128),
                   options.get("chat_template", "auto"), options.get("class_words"))[1]


def _encode(df, tokenizer, max_prompt_length, max_response_length, chat_template, class_words):
    max_prompt_length = _count("max_prompt_length", max_prompt_length)
    max_response_length = _count("max_response_length", max_response_length)
    if len(df) == 0:
        raise LayerinfError("cannot encode an empty split", "check the data source and the split sizes")
    missing = [c for c in ("response",) if c not in df.columns]
    if missing or ("messages" not in df.columns and "prompt" not in df.columns):
        raise LayerinfError(f"the split lacks column(s) {missing or ['messages or prompt']}",
                            "prepare it with layerinf.data.sft")
    template = uses_chat_template(tokenizer, chat_template)
    responses = df["response"].astype(str).tolist()
    end = _end_id(tokenizer)
    replies = [_ids(r) for r in tokenizer(responses, add_special_tokens=False)["input_ids"]]
    empty = [i for i, r in enumerate(replies) if not r]
    if empty:
        raise LayerinfError(f"the response of {_where(df, empty[0])} is empty after tokenisation "
                            f"({len(empty)} such row(s)): {responses[empty[0]][:40]!r}",
                            "give that row a response with visible text, or delete it")
    lead = [] if template else _lead_specials(tokenizer)
    keep_first = {t for t in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "cls_token_id", None))
                  if isinstance(t, (int, np.integer))}
    if not template:
        prompts = [plain_prompt(_messages(df, i)) for i in range(len(df))]
        prompt_ids = [lead + _ids(p) for p in tokenizer([p + "\n" for p in prompts],
                                                         add_special_tokens=False)["input_ids"]]
    features, fallbacks, cut_p, cut_r = [], 0, 0, 0
    for i in range(len(df)):
        if template:
            prompt, reply, ok = _template_pair(tokenizer, _messages(df, i), responses[i], end, replies[i],
                                               _where(df, i))
            fallbacks += not ok
        else:
            prompt, reply = prompt_ids[i], replies[i] + ([end] if end is not None else [])
        cut_p += len(prompt) > max_prompt_length
        cut_r += len(reply) > max_response_length
        prompt, reply = _cut_prompt(prompt, max_prompt_length, keep_first), reply[:max_response_length]
        if not reply:  # cannot happen with caps ≥ 1; kept as the rule's guard
            raise LayerinfError(f"the response of {_where(df, i)} is cut to nothing",
                                "raise max_response_length")
        ids = prompt + reply
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "token_labels": [IGNORE_INDEX] * len(prompt) + list(reply)})
    labels = np.zeros(len(df), dtype=np.int64)
    if class_words:
        lookup = {str(w): k for k, w in enumerate(class_words)}
        unknown = sorted({r for r in responses if r not in lookup})
        if unknown:
            raise LayerinfError(f"response(s) {unknown[:3]} are not among the class words {list(class_words)}",
                                "pass class_words only for classification-as-generation data")
        labels = np.array([lookup[r] for r in responses], dtype=np.int64)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if isinstance(pad, (int, np.integer)) else (end if end is not None else 0)
    index = df["idx"].to_numpy(dtype=np.int64) if "idx" in df.columns else np.arange(len(df), dtype=np.int64)
    enc = EncodedSplit(features=features, labels=labels, index=index, pad_token_id=int(pad),
                       padding_side=getattr(tokenizer, "padding_side", "right") or "right")
    stats = {"chat_template": template, "fallback_rows": fallbacks, "prompt_truncated": cut_p,
             "response_truncated": cut_r}
    return enc, stats


__all__ = [
    "CHAT_TEMPLATE_MODES",
    "IGNORE_INDEX",
    "chat_template_arg",
    "encode_sft",
    "has_chat_template",
    "plain_prompt",
    "sft_encoding_stats",
    "uses_chat_template",
]
