from edge_ai.cli import main

main()
