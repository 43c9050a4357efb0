"""Storage both services share: the content-addressed blob files."""
