"""`python -m pianolab` = the `pianolab` command."""

from pianolab.cli import main

main()
