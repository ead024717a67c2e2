from gantool.app.cli import main

main()
