"""The trained tiny run (``trained_run``) used here lives in tests/conftest.py."""
