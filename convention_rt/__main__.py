from convention_rt.cli import main

main()
