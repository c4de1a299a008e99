"""The loop every component runs, gather → filter → work → post → log, and its steps:
gatherers (a broker queue, the retry store), the post step (confirmed publishing) and
the wiring of a configuration into them.  Knows steps, not components."""
from dd.flow.gatherers import BrokerGatherer, Retrying, notices, retry_key
from dd.flow.item import Item
from dd.flow.loop import TICK_INTERVAL, Counters, Flow
from dd.flow.posting import Poster, Posters
from dd.flow.wiring import accept_lines, consumer, poster, publisher, reporter, subscription

__all__ = ["TICK_INTERVAL", "BrokerGatherer", "Counters", "Flow", "Item", "Poster", "Posters", "Retrying",
           "accept_lines", "consumer", "notices", "poster", "publisher", "reporter", "retry_key", "subscription"]
