from cnntrain.cli import main

main()
