"""The vsnystra command line."""
