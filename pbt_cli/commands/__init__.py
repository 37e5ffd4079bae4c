"""Thin command modules: parse options, build a frozen config, call the pipeline, render the result."""
