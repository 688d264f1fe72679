"""Benchmarks that print the tables the README quotes (see bench/README.md)."""
