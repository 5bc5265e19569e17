"""``python -m winback`` runs the command line."""

from winback.cli import main

if __name__ == "__main__":
    main()
