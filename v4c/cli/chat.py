"""`v4c chat`: an interactive conversation, one user message a line.

What a user of other chat front-ends expects: a welcome line that says how to leave; line
editing and history on a terminal (readline); an empty line is nothing, not the end;
commands (`/help`); Ctrl-C stops the reply, not the chat; a conversation that outgrows
`--max-seq` loses its oldest turns (said when it happens) instead of ending the session,
and a message that cannot fit even alone is refused with what to do.

The reply is kept as the message it parses to, so the history is the official one; a turn
feeds the engine only the tokens added where that history extends what the engine holds
(not in thinking mode, where the earlier reasoning is dropped from the history).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated

import typer

from v4c.cli.options import (
    Backend,
    Checkpoint,
    CudaGraphs,
    Device,
    DraftTokens,
    FrequencyPenalty,
    MaxNew,
    MaxSeq,
    Numerics,
    PlanDir,
    PresencePenalty,
    RandomWeights,
    RepetitionPenalty,
    Seed,
    SpecOpt,
    Speculative,
    Stop,
    Temperature,
    Threads,
    TopK,
    TopP,
    utf8,
)
from v4c.cli.model import Model, place_model
from v4c.errors import V4CError

HELP = """commands:
  /clear           forget the conversation (the system prompt stays)
  /system TEXT     set the system prompt (/system alone: none) and start again
  /thinking on|off thinking mode (alone: switch it)
  /exit            end the chat (also Ctrl-D, or Ctrl-C at the prompt)
  /help            this list"""


@dataclass
class Chat:
    """The conversation and what the engine holds of it."""

    session: object
    limit: int  # max_seq
    sampler: object
    drafter: object
    max_new: int
    thinking: bool
    system: str | None = None
    penalties: object = None
    stops: list[str] = field(default_factory=list)
    turns: list[list[dict]] = field(default_factory=list)  # [user, assistant] each
    fed: list[int] = field(default_factory=list)  # the tokens the engine's sequence holds

    def messages(self, turns: list[list[dict]]) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [m for turn in turns for m in turn]

    def prompt_ids(self, user: dict) -> tuple[str, list[int], int]:
        """(text, ids, turns to drop): the conversation with `user` appended, without as
        many of the oldest turns as it takes to leave room for a whole reply."""
        from v4c.runtime.chat.encode import encode_chat

        for dropped in range(len(self.turns) + 1):
            text = encode_chat([*self.messages(self.turns[dropped:]), user], thinking=self.thinking)
            ids = self.session.tokenizer.encode(text)
            if len(ids) + self.max_new - 1 <= self.limit:
                break
        return text, ids, dropped

    def turn(self, line: str) -> None:
        from v4c.cli.reply import parsed, reply
        from v4c.limits import check_fits

        user = {"role": "user", "content": line}
        text, ids, dropped = self.prompt_ids(user)
        try:
            check_fits(0, len(ids), self.limit, self.max_new)
        except V4CError as err:
            say(f"[not sent: {err}, by restarting v4c chat with it]")
            return
        if dropped:
            del self.turns[:dropped]
            say(
                f"[dropped the {dropped} oldest turn{'s' * (dropped > 1)}: the conversation "
                f"outgrew max_seq {self.limit} tokens]"
            )
        if ids[: len(self.fed)] != self.fed:  # earlier turns render differently: start again
            self.session.engine.reset(1)
            self.fed = []
        held = len(self.fed)
        try:
            answer = reply(
                self.session, self.limit, ids[held:], self.max_new, self.sampler, held=held,
                drafter=self.drafter, penalties=self.penalties, stops=self.stops,
            )  # fmt: skip
        except V4CError as err:  # e.g. a token the model cannot embed: this line only
            say(f"[not sent: {err}]")
            self.fed = []  # whatever the engine holds now, the next turn feeds all again
            return
        # the last new token was sampled, not fed; after Ctrl-C the caches may hold part of
        # a step, so the next turn feeds the whole conversation again
        self.fed = ids + answer.tokens[:-1] if answer.complete else []
        self.turns.append([user, parsed(self.session, text, answer.tokens, self.stops)])

    def command(self, line: str) -> bool:
        """Run a /command; False: the chat ends."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name == "/exit":
            return False
        if name == "/help":
            say(HELP)
        elif name == "/clear":
            self.turns = []
            say("[conversation cleared]")
        elif name == "/system":
            self.system, self.turns = arg or None, []
            say(f"[system prompt {'set' if arg else 'removed'}; conversation cleared]")
        elif name == "/thinking" and arg in ("", "on", "off"):
            self.thinking = (arg == "on") if arg else not self.thinking
            say(f"[thinking {'on' if self.thinking else 'off'}]")
        else:
            say(f"[unknown command {line!r}]\n{HELP}")
        return True


def say(text: str) -> None:
    typer.echo(text, err=True)


def read_lines():
    """The user's lines, until EOF or Ctrl-C at the prompt. On a terminal through
    `input()` with readline (editing, history); from a pipe, as they come, the prompt on
    stderr so that stdout holds only the replies."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401 - input() then edits lines and keeps a history
        except ImportError:  # not on every platform: plain input() still works
            pass
        while True:
            try:
                yield input("> ")
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")
                return
    raw = getattr(sys.stdin, "buffer", None)  # bytes: a bad line does not lose the next
    while True:
        say_prompt()
        try:
            line = raw.readline() if raw is not None else sys.stdin.readline()
        except KeyboardInterrupt:
            return
        if not line:
            return
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                say("[not sent: the line is not UTF-8 text]")
                continue
        yield line


def say_prompt() -> None:
    typer.echo("> ", nl=False, err=True)


def chat_command(
    model: Model = None,
    checkpoint: Checkpoint = None,
    spec: SpecOpt = None,
    random_weights: RandomWeights = False,
    system: Annotated[
        str | None, typer.Option(help="A system prompt for the conversation (/system changes it).")
    ] = None,
    thinking: Annotated[bool, typer.Option(help="Thinking mode (/thinking switches it).")] = False,
    max_new_tokens: MaxNew = 256,
    temperature: Temperature = 0.6,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    seed: Seed = None,
    device: Device = None,
    numerics: Numerics = None,
    backend: Backend = "auto",
    max_seq: MaxSeq = None,
    threads: Threads = None,
    plan: PlanDir = None,
    cuda_graphs: CudaGraphs = True,
    speculative: Speculative = None,
    draft_tokens: DraftTokens = 1,
    stop: Stop = None,
    repetition_penalty: RepetitionPenalty = 1.0,
    frequency_penalty: FrequencyPenalty = 0.0,
    presence_penalty: PresencePenalty = 0.0,
) -> None:
    """An interactive chat: one user message a line; /help lists the commands.

    Ctrl-C during a reply stops that reply and keeps the conversation; /exit, Ctrl-D or
    Ctrl-C at the prompt ends the chat. When the conversation outgrows --max-seq, its oldest
    turns are dropped.
    """
    from v4c.runtime.launch import place_from_env

    checkpoint, spec = place_model(model, checkpoint, spec, plan, random_weights)
    if place_from_env() is not None:
        raise V4CError("v4c chat runs in one process; for several ranks use v4c run --tp/--ep")
    for text, what in [(system or "", "--system"), *((s, "--stop") for s in stop or [])]:
        utf8(text, what)
    from v4c.cli import run as run_cli
    from v4c.cli.setup import choose_drafter

    session, limit = run_cli.open_cli_session(
        checkpoint, spec, device, numerics, backend, max_seq, threads, plan, cuda_graphs,
        random_weights=random_weights,
    )  # fmt: skip
    from v4c.runtime.penalties import Penalties
    from v4c.runtime.sampler import Sampler

    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    penalties = Penalties(repetition_penalty, frequency_penalty, presence_penalty)
    drafter = choose_drafter(session, speculative, draft_tokens, sampler, None, penalties)
    chat = Chat(session, limit, sampler, drafter, max_new_tokens, thinking, system, penalties,
                stop or [])  # fmt: skip
    session.engine.reset(1)
    say(
        f"chat with {session.spec.name} (max_seq {limit} tokens): one message a line; "
        "/help lists the commands; /exit or Ctrl-D ends"
    )
    for line in read_lines():
        line = line.strip()
        if not line:
            continue
        try:
            utf8(line, "the line")
        except V4CError as err:
            say(f"[not sent: {err}]")
            continue
        if line.startswith("/"):
            if not chat.command(line):
                break
            continue
        chat.turn(line)
