"""Kafka client wrappers: configuration, producers, topic administration, bounded reads."""
