"""End-to-end tests: real uvicorn processes on loopback ports."""
