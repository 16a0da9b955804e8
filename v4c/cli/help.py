"""How `v4c ... --help` reads: plain text re-flowed to the terminal's width, and every value
named as argparse names it (`--max-seq MAX_SEQ`, `SPEC` in the usage line).

Why not typer's defaults: its rich tables keep the source's line breaks inside paragraphs
(sentences broken mid-way), and it names values by Python type (`<int range>`, `<bool>` on
a flag, `{spec_file}` for a required argument), which is noise to a user. click's own
formatter re-flows paragraphs; the names are set here once for every command, so a command
added later reads the same without repeating a `metavar` on each option.
"""

from __future__ import annotations


def tidy(command):
    """The click `command` and its subcommands, set to print help as the module doc says."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for param in command.params:
        if param.metavar is None and not getattr(param, "is_flag", False):
            param.metavar = (param.name or "value").upper()
        if param.param_type_name == "argument":  # typer may carry its own copy of click
            _plain_argument(param)
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command


def _plain_argument(param) -> None:
    """The argument as `NAME` (required) or `[NAME]` in the usage line, `NAME...` when it
    repeats, and without a type after its name in the Arguments section."""
    name = param.metavar + ("..." if param.nargs != 1 else "")
    piece = name if param.required else f"[{name}]"
    param.get_usage_pieces = lambda ctx: [piece]
    param.display_type_rich = lambda ctx: None
