"""Data: the download hub, PDE generators and loaders of the paper tasks."""
