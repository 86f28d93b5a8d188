"""Instruction data, row by row: find the prompt / response (or chat ``messages``) columns of a table and
normalise every row to ``RAW_COLUMNS`` (``layerinf.data.sft`` loads sources and uses this).

Prompt columns tried: ``prompt``, ``instruction``, ``question``; responses: ``response``, ``output``,
``completion``, ``answer``; chat: ``messages``, ``conversations``, ``conversation``, ``chat`` (ShareGPT
``{from, value}`` turns accepted). An empty prompt or response is an error naming the rows, never dropped.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from layerinf.data.raw import row_list
from layerinf.data.tables import find_column
from layerinf.errors import LayerinfError

RAW_COLUMNS = ["source_idx", "messages", "prompt", "response"]

PROMPT_GUESSES = ("prompt", "instruction", "question")
RESPONSE_GUESSES = ("response", "output", "completion", "answer")
MESSAGES_GUESSES = ("messages", "conversations", "conversation", "chat")
INPUT_COLUMN = "input"  # Alpaca: appended to an `instruction` column
ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "tool": "tool", "function": "tool"}


# ------------------------------------------------------------------------------------------------ cells


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return False


def _text(value: Any) -> str | None:
    """A cell as text: str as is, numbers/bools as ``str``; None for missing and for lists/dicts (not text)."""
    if _missing(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (numbers.Number, np.bool_, bool)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value.item() if isinstance(value, np.generic) else value)
    return None


def _turns(value: Any) -> list | None:
    """A messages cell as a Python list (JSON text is parsed; Parquet gives numpy arrays); None if it is not."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, list) else None


def _turn(msg: Any) -> dict[str, str] | None:
    """One turn as ``{"role", "content"}`` (ShareGPT ``from``/``value`` mapped); None when malformed."""
    if not isinstance(msg, dict):
        return None
    if "role" in msg:
        role, content = msg.get("role"), msg.get("content")
    elif "from" in msg:
        role, content = _SHAREGPT_ROLES.get(str(msg.get("from")).lower()), msg.get("value")
    else:
        return None
    if not isinstance(role, str) or role.lower() not in ROLES:
        return None
    content = _text(content)
    if content is None:
        return None
    return {"role": role.lower(), "content": content}


def _fail_rows(rows: list[int], what: str, where: str, fix: str) -> None:
    if rows:
        raise LayerinfError(f"{len(rows)} row(s) of {where} {what} (row {row_list(rows)}; rows count from 0, "
                            f"a header line not counted)", fix)


# ------------------------------------------------------------------------------------------------ normalising


def _columns(df: pd.DataFrame, prompt_column, response_column, messages_column, where: str) -> dict[str, Any]:
    """Which columns hold the data: ``{"layout", "messages"}`` or ``{"layout", "prompt", "response", "input"}``."""
    cols = [str(c) for c in df.columns]
    if messages_column is not None and (prompt_column is not None or response_column is not None):
        raise LayerinfError("messages_column cannot be combined with prompt_column/response_column",
                            "give either a chat messages column or a prompt and a response column")
    if messages_column is not None:
        return {"layout": "messages", "messages": find_column(cols, messages_column, (), "messages",
                                                              "messages_column (CLI --messages-column)", where)}
    prompt = find_column(cols, prompt_column, PROMPT_GUESSES, "prompt", "prompt_column (CLI --prompt-column)", where)
    response = find_column(cols, response_column, RESPONSE_GUESSES, "response",
                           "response_column (CLI --response-column)", where)
    if prompt is None and response is None:
        messages = find_column(cols, None, MESSAGES_GUESSES, "messages", "messages_column", where)
        if messages is not None:
            return {"layout": "messages", "messages": messages}
    if response is None:
        raise LayerinfError(f"no response column in {where} (looked for {', '.join(RESPONSE_GUESSES)}); "
                            f"columns found: {', '.join(cols)}",
                            "name it with response_column (CLI --response-column), or give a chat column with "
                            "messages_column")
    if prompt is None:
        raise LayerinfError(f"no prompt column in {where} (looked for {', '.join(PROMPT_GUESSES)}); "
                            f"columns found: {', '.join(cols)}", "name it with prompt_column (CLI --prompt-column)")
    if prompt == response:
        raise LayerinfError(f"the prompt and the response are the same column {prompt!r} in {where}",
                            "name two different columns")
    extra = None
    if prompt.lower() == "instruction":
        extra = next((c for c in cols if c.lower() == INPUT_COLUMN and c not in (prompt, response)), None)
    return {"layout": "prompt_response", "prompt": prompt, "response": response, "input": extra}


def _from_pairs(df: pd.DataFrame, cols: dict[str, Any], where: str) -> pd.DataFrame:
    prompts = [_text(v) for v in df[cols["prompt"]].tolist()]
    responses = [_text(v) for v in df[cols["response"]].tolist()]
    for name, values in ((cols["prompt"], prompts), (cols["response"], responses)):
        _fail_rows([i for i, v in enumerate(values) if v is None], f"hold a list or an object in column {name!r}, "
                   "not text", where, "give one text per cell (for chat turns use messages_column)")
    if cols.get("input"):
        inputs = [_text(v) or "" for v in df[cols["input"]].tolist()]
        prompts = [p if not x.strip() else f"{p}\n\n{x}" if p.strip() else x for p, x in zip(prompts, inputs)]
    _fail_rows([i for i, v in enumerate(responses) if not v.strip()], f"have an empty response (column "
               f"{cols['response']!r})", where, "fill in every response or delete those rows")
    _fail_rows([i for i, v in enumerate(prompts) if not v.strip()], f"have an empty prompt (column "
               f"{cols['prompt']!r})", where, "fill in every prompt or delete those rows")
    messages = [json.dumps([{"role": "user", "content": p}], ensure_ascii=False) for p in prompts]
    return _frame(np.arange(len(df)), messages, prompts, responses)


def _from_messages(df: pd.DataFrame, column: str, where: str) -> pd.DataFrame:
    bad_list, bad_turn, not_assistant, too_short, empty = [], [], [], [], []
    messages, prompts, responses = [], [], []
    for i, cell in enumerate(df[column].tolist()):
        turns = _turns(cell)
        if turns is None:
            bad_list.append(i)
            continue
        parsed = [_turn(m) for m in turns]
        if any(m is None for m in parsed):
            bad_turn.append(i)
            continue
        if not parsed or parsed[-1]["role"] != "assistant":
            not_assistant.append(i)
            continue
        if len(parsed) < 2:
            too_short.append(i)
            continue
        if not parsed[-1]["content"].strip():
            empty.append(i)
            continue
        prompt_turns = parsed[:-1]
        users = [m["content"] for m in prompt_turns if m["role"] == "user"]
        messages.append(json.dumps(prompt_turns, ensure_ascii=False))
        prompts.append(users[-1] if users else prompt_turns[-1]["content"])
        responses.append(parsed[-1]["content"])
    example = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
    _fail_rows(bad_list, f"hold no list of messages in column {column!r}", where,
               f"give each row a list of turns such as {example}")
    _fail_rows(bad_turn, f"hold a message that is not {{role, content}} text in column {column!r} (roles: "
               f"{', '.join(ROLES)})", where, "give each turn as {\"role\": ..., \"content\": \"text\"}")
    _fail_rows(not_assistant, f"do not end with an assistant turn in column {column!r}", where,
               "end every conversation with the assistant's reply (it is the response the model learns)")
    _fail_rows(too_short, f"have no prompt turn before the assistant turn in column {column!r}", where,
               "put at least one user turn before the assistant's reply")
    _fail_rows(empty, f"have an empty response (the last assistant turn of column {column!r})", where,
               "fill in every assistant reply or delete those rows")
    return _frame(np.arange(len(df)), messages, prompts, responses)


def _frame(source_idx, messages, prompts, responses) -> pd.DataFrame:
    return pd.DataFrame({
        "source_idx": np.asarray(source_idx, dtype=np.int64),
        "messages": pd.Series(list(messages), dtype=object),
        "prompt": pd.Series(list(prompts), dtype=object),
        "response": pd.Series(list(responses), dtype=object),
    })


def normalise_sft(df: pd.DataFrame, *, prompt_column: str | None = None, response_column: str | None = None,
                  messages_column: str | None = None, where: str = "the data") -> tuple[pd.DataFrame, dict]:
    """One source table → a raw SFT table (``RAW_COLUMNS``, ``source_idx`` = row position) and the columns used."""
    if len(df) == 0:
        raise LayerinfError(f"{where} has no rows (a header alone, or nothing)", "give a file with data rows")
    cols = _columns(df, prompt_column, response_column, messages_column, where)
    if cols["layout"] == "messages":
        return _from_messages(df, cols["messages"], where), cols
    return _from_pairs(df, cols, where), cols


__all__ = ["MESSAGES_GUESSES", "PROMPT_GUESSES", "RAW_COLUMNS", "RESPONSE_GUESSES", "normalise_sft"]
