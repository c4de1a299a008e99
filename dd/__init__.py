"""dd: data distribution over AMQP notices."""
__version__ = "0.1.0"
