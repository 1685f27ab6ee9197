from mlplatform.cli import run

run()
