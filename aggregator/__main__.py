"""The `aggregator` program (`python -m aggregator`, and the console script)."""

from aggregator import warmup


def main() -> None:
    """The collector is off while the command imports what it needs (cli.py turns it back on
    once they are done: warmup.py). Only here, where this process is the program: the same
    pause from `cli.main` called inside someone else's process would freeze their heap."""
    warmup.pause()
    from aggregator.cli import main as command

    command()


if __name__ == "__main__":  # a helper process (spawn) imports this module too
    main()
