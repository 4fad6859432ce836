"""The audit: settings, orchestration of every stage, and the versioned results it writes."""
