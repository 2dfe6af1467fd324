from stories.cli import main

main()
