"""Shared fixtures: real servers (nginx, sshd) and a real broker, isolated per run."""
pytest_plugins = ["tests.support.servers", "tests.support.brokers", "tests.support.pump", "tests.support.mosquitto",
                  "tests.support.wsbridge", "tests.support.rabbitmq_mqtt", "tests.support.cluster",
                  "tests.support.redisserver", "tests.support.scheduling"]


def pytest_configure(config):
    config.addinivalue_line("markers", "broker: needs the RabbitMQ on 127.0.0.1:5672")
