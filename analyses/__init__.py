"""Analyses: compositions of the ``landscape`` core into named studies, and the command line."""
