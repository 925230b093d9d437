from mosis_cli import run

run()
