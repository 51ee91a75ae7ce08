"""Shared wire models, events, settings and Redis layout of the order tracking services.

Services import this package and never each other.
"""
