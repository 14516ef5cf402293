"""Test-support code shared by the test modules (imported as ``tests.support``; pytest's
``pythonpath = ["."]`` puts the checkout on the path)."""
