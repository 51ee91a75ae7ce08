"""The api's routes, one module per thing served."""
