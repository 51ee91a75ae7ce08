"""The query service's routes, one module per thing served."""
