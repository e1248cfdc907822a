"""Prometheus metrics of the service: HTTP traffic, inference counters, and the queue, jobs and
workers read from the database when scraped."""
