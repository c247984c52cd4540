from convention_rt.launcher import main

main()
