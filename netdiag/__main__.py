from netdiag.cli.main import main

main()
