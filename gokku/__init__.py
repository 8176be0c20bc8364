"""Gokku: administer a host over SSH the way Dokku users do."""

__version__ = "0.1.0"
