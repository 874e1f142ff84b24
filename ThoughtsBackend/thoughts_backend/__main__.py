from .cli import cli

cli(prog_name="python -m thoughts_backend")
