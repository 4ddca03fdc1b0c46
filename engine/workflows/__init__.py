"""Workflows over a project file: train, predict, evaluate, review.

Each is one function the CLI and the GUI call; they read the project, run engine
functions, and write results back atomically.
"""
