"""Evaluation, load testing and the harness scripts and tests share, all over the client library."""
