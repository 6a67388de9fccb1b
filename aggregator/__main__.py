from aggregator.cli import main

if __name__ == "__main__":  # a helper process (spawn) imports this module too
    main()
