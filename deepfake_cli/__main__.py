from deepfake_cli.cli import main

main()
