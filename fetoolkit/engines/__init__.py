"""Extraction engines: ``local`` (processes on this machine) and ``ray`` (Ray Data on a cluster)."""
