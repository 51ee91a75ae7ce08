"""Order processor: a Kafka consumer-group worker that drives orders through their lifecycle."""
