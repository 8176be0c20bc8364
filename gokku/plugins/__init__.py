"""Plugins: directories of Bash scripts following the plugin contract (spec)."""
