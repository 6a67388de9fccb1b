from aggregator import warmup

if __name__ == "__main__":  # a helper process (spawn) imports this module too
    warmup.pause()  # before the command's imports (cli.main turns it back on)

from aggregator.cli import main

if __name__ == "__main__":
    main()
