"""`python -m pbt_cli ...` runs the same CLI as `pbt ...` (this is the form `accelerate launch -m` needs)."""

from pbt_cli.cli import main

if __name__ == "__main__":
    main()
