"""The processor's operator commands, each run as `python -m orders_processor.commands.<name>`:
`dlq` (`make dlq`: list, filter, redrive dead letters) and `rebuild` (`make rebuild`: the read
model again, from the status topic alone)."""
