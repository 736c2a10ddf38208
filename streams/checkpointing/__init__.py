"""Model checkpoints: the engine's state in Redis, so a restarted worker resumes instead of relearning."""
