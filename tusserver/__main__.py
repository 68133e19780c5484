"""`python -m tusserver` is the same as the `tusserver` command."""

from tusserver.cli import main

main()
