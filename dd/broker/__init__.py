"""The broker: connect, declare, publish with confirms, consume, ack.

One small interface for the layers above (dd.flow): messages go out through a
Publisher and come in through a Consumer of one Subscription, as Deliveries; a
Batch of Envelopes is published with confirms across lost connections.
AMQP 0-9-1 over py-amqp (dd.broker.amqp) is the one implementation today.  This
package knows messages (topic, body, headers), not notices or files, and never
imports dd.transfer.
"""
from dd.broker.amqp import (CONNECTION_ERRORS, READ_AHEAD, Consumer, Delivery, Publisher, Subscription,
                            close_quietly, connect, queue_size, vhost_of)
from dd.broker.batch import Batch, Envelope

__all__ = ["CONNECTION_ERRORS", "READ_AHEAD", "Batch", "Consumer", "Delivery", "Envelope", "Publisher",
           "Subscription", "close_quietly", "connect", "queue_size", "vhost_of"]
