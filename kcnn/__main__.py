"""`python -m kcnn` runs the command-line tool."""

from kcnn.cli import main

if __name__ == "__main__":
    main()
