"""`v4c run --prompt-file FILE`: many prompts generated as one batch, the results as JSON
lines (one a prompt, in the file's order) for a program to read.

The file: plain text, one prompt a line (empty lines skipped); or, named `*.jsonl`, one
JSON value a line: a string (a prompt), a list of messages (a conversation), or an object
with "prompt" or "messages". `-` reads the prompts from standard input. Every line is
checked before the model is loaded, and a bad one is reported with its line number.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from v4c.errors import V4CError
from v4c.paths import need_file


def read_prompt_file(path: Path) -> list[dict]:
    """Each prompt as {"prompt": text} or {"messages": [...]}, in the file's order."""
    if str(path) == "-":
        from v4c.cli.options import read_stdin

        text, name, jsonl = read_stdin("--prompt-file -"), "<stdin>", False
    else:
        need_file(path, "prompt file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise V4CError(f"{path}: cannot read the prompt file: {err}") from None
        name, jsonl = str(path), Path(path).suffix == ".jsonl"
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            items.append(_item(line, f"{name}:{number}") if jsonl else {"prompt": line.strip()})
    if not items:
        raise V4CError(f"{name}: no prompts (one a line; empty lines are skipped)")
    return items


def _item(line: str, where: str) -> dict:
    from v4c.runtime.chat.format import ChatError
    from v4c.runtime.chat.messages import checked_message

    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise V4CError(f"{where}: not JSON: {err}") from None
    if isinstance(value, dict) and set(value) in ({"prompt"}, {"messages"}):
        value = value.get("prompt", value.get("messages"))
    if isinstance(value, str):
        return {"prompt": value}
    if isinstance(value, list) and value:
        try:
            for i, message in enumerate(value):
                checked_message(i, message)
        except ChatError as err:
            raise V4CError(f"{where}: {err}") from None
        return {"messages": value}
    raise V4CError(
        f'{where}: expected a string, a list of messages, or an object with "prompt" or '
        f'"messages", got {line.strip()[:60]}'
    )


def run_batch(session, limit: int, items: list[dict], *, chat: bool, thinking: bool,
              max_new: int, sampler, drafter, penalties=None, stops=()) -> None:  # fmt: skip
    """Generate for every item at once; print one JSON line each, then the speed line.
    A stop string cuts a reply's text there (finish reason "stop"); the batch runs on."""
    from v4c.cli.reply import count, parsed
    from v4c.cli.progress import PrefillBar
    from v4c.runtime.penalties import cut_at_stop
    from v4c.limits import check_fits, check_vocab, new_token_budget
    from v4c.runtime.chat.encode import encode_chat
    from v4c.runtime.generate import generate

    tok = session.tokenizer
    texts, prompts = [], []
    for item in items:
        if "messages" in item or chat:
            conversation = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
            texts.append(encode_chat(conversation, thinking=thinking))
            prompts.append(tok.encode(texts[-1]))
        else:
            texts.append(item["prompt"])
            prompts.append([tok.bos_id, *tok.encode(item["prompt"])])
    for i, ids in enumerate(prompts):
        try:
            check_vocab(ids, session.spec.vocab_size)
            check_fits(0, len(ids), limit, max_new)
        except V4CError as err:
            raise V4CError(f"prompt {i + 1}: {err}") from None
    budgets = [new_token_budget(0, len(ids), limit, max_new)[0] for ids in prompts]
    # one budget for the batch: the longest prompt's; shorter ones stop at it too
    budget = min(budgets)
    with PrefillBar(session.engine, sum(map(len, prompts))):  # closed when the prefill ends
        result = generate(session.engine, prompts, sampler, max_new_tokens=budget,
                          stop_ids={tok.eos_id}, drafter=drafter, penalties=penalties)  # fmt: skip
    for i, reply in enumerate(result.tokens):
        reason = result.stop_reasons[i]
        if reason == "length" and budget < max_new:
            reason = "max_seq"
        text, stopped = cut_at_stop(tok.decode(reply, skip_special_tokens=True), list(stops))
        line = {
            "index": i,
            "finish_reason": "stop" if stopped else reason,
            "prompt_tokens": len(prompts[i]),
            "completion_tokens": len(reply),
            "text": text,
        }
        if "messages" in items[i] or chat:
            line["message"] = parsed(session, texts[i], reply, list(stops))
        typer.echo(json.dumps(line, ensure_ascii=False))
    typer.echo(
        f"[{count(len(items), 'prompt')}, {sum(result.prompt_tokens)} prompt tokens, "
        f"{sum(result.generated_tokens)} new; prefill {result.prefill_s:.2f} s, decode "
        f"{result.tokens_per_s:.1f} tokens/s over the batch]",
        err=True,
    )
