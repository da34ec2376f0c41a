"""Operator commands that run outside AWS Lambda, from a checkout: `python -m tools.<name>`."""
