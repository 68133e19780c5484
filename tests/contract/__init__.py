"""Contract suites: every implementation of an interface passes the same tests."""
