"""Sarracenia v03 format (placeholder until its codec lands)."""
NAME = "sr_v03"
TOPIC_PREFIX = "v03"
CONTENT_TYPE = "application/json"


def recognizes(body, headers):
    return False
