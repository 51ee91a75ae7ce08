"""Kafka for the order tracking services, through aiokafka.

Topics created with their partitions and retention, producers and readers with our settings,
bounded stops, and the headers every record we produce carries (the CloudEvents content type
and the trace context): `clients`.
"""
