"""Shared fixtures: real servers (nginx, sshd) and a real broker, isolated per run."""
pytest_plugins = ["tests.servers", "tests.brokers", "tests.pump"]
