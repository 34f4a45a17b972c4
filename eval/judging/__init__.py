"""Judging: the local judge model, the RAGAS metrics wired to it, calibration (which metrics the judge may be
trusted with), grading recorded interactions and storing the scores."""
