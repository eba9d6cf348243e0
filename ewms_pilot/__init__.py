"""EWMS pilot: consumes task messages, runs each task, publishes its output, chirps status."""
