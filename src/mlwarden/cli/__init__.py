"""Command-line interface (typer). Commands are thin: parse, call one function, render."""
