"""Where a batch's outputs go: Kafka topics (changelog, recommendations, dead letters) and Redis."""
