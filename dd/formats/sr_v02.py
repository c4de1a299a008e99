"""Sarracenia v02 format (placeholder until its codec lands)."""
NAME = "sr_v02"
TOPIC_PREFIX = "v02.post"
CONTENT_TYPE = "text/plain"


def recognizes(body, headers):
    return False
