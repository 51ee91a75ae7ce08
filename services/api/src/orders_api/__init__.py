"""Order ingest API: validates orders, publishes them to Kafka, answers once Kafka has them."""
