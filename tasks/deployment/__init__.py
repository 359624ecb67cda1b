"""Deployment: the service on a target (local, docker, kubernetes), split across devices, and its smoke test."""
