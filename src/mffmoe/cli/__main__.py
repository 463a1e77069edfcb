"""`python -m mffmoe.cli`, the same as the `mffmoe` command."""
from mffmoe.cli import main

main()
