"""Order read API over the Redis read model."""
