"""`python -m v4c` is the `v4c` command."""

from v4c.cli import main

main()
