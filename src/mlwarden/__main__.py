from mlwarden.cli.main import main

main()
